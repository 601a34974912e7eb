"""Running untrusted code for a reward, so that the reward cannot be forged.

``checks.py`` runs one check (the judge and the candidate in separate processes),
``isolation.py`` says what the machine gives and refuses less than required, ``jail.py``
builds the candidate's namespaces and filesystem, ``wire.py`` is the only thing that crosses
between the two, and ``judge.py`` / ``candidate.py`` are the two processes' scripts.
"""

from neuromas_dist.tasks.sandbox.checks import STATUSES, CodeJob, CodeOutcome, SandboxLimits, check, check_async, job_of
from neuromas_dist.tasks.sandbox.isolation import LEVELS, Isolation, IsolationError, probe, require

__all__ = ["LEVELS", "STATUSES", "CodeJob", "CodeOutcome", "Isolation", "IsolationError", "SandboxLimits", "check",
           "check_async", "job_of", "probe", "require"]
