"""Package discovery for the one thing pyproject.toml cannot say statically: the folders
api/, core/, run/ and worker/ at the top of the repository install as the subpackages of
``lg_deploy`` (a namespace package), so that nothing called ``api`` or ``core`` lands in
a user's site-packages. Every package below them is found, not listed."""

from setuptools import find_packages, setup

TOP_LEVEL = ("api", "core", "run", "worker")

setup(
    packages=[f"lg_deploy.{name}" for name in find_packages(include=[f"{t}*" for t in TOP_LEVEL])],
    package_dir={f"lg_deploy.{name}": name for name in TOP_LEVEL},
    package_data={f"lg_deploy.{name}": ["py.typed"] for name in TOP_LEVEL}
    | {"lg_deploy.core.store.migrations": ["script.py.mako"]},
)
