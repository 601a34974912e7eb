"""The overrides of a small training run, shared by every test that trains one: 4 questions
x 2 samples a step, 24 new tokens, 8 held-out questions, no progress bar. A run in the test
process adds ``WARM``: its rollout workers stay parked for the next run with the same engine
settings (``rollout.keep_warm``; about 20 s a run here); runs in a process of their own do not."""

SMALL_RUN = ["trainer.questions_per_step=4", "sampling.n_samples=2", "sampling.max_new_tokens=24",
             "data.n_eval=8", "data.n_train=64", "logging.progress=false"]
WARM = "rollout.keep_warm=true"
