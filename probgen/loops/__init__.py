"""One loop per kind of algorithm. Methods in ``inference/`` supply the steps; the loop
owns the budget, stopping, restarts, history, progress bar, callbacks and checkpoints.

* `probgen.loops.iterative` – EM, CAVI and fixed-point mean-field (init / E-step /
  M-step / objective supplied by the method);
* `probgen.loops.gradient` – gradient training (minibatches, optimiser, schedule,
  clipping, EMA, validation and early stopping);
* `probgen.loops.mcmc` – Markov chains (a kernel is one transition; the driver owns
  warm-up, draws, chains, thinning and diagnostics).
"""
