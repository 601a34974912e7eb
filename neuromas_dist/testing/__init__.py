"""Tools for testing a deployment of neuromas_dist, shipped with it (as ``torch.testing``
is): fault injection into a live run, and the audit of what a run left behind."""
