"""The domain rules of the LangGraph Platform (Agent Server) API, on top of executions.

A platform run is an execution (``core/models.py``): the same row, claim, lease, fencing,
resume and reconciler. What the platform adds lives here: the ids of system assistants and
how an assistant id is resolved (``assistants.py``), the one mapping from execution to run
and thread statuses (``statuses.py``), the options a run is created with (``runs.py``), the
SQL of assistants, threads and runs (``store.py``) and the checkpoint operations the savers
do not offer (``checkpoints.py``).
"""
