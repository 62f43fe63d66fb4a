"""How lg-deploy runs: the ``lg-deploy`` command, the processes it starts, and the wiring
that opens the backends from settings.

This is the only package that imports both planes: ``lg_deploy.run`` -> ``lg_deploy.api``
and ``lg_deploy.worker`` -> ``lg_deploy.core``, never the other way.
"""
