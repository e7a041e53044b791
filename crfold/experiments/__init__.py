"""Experiments: plans of training runs over seeds, trained and evaluated resumably, then reported.

* :mod:`.runner` - task-agnostic: trains a plan of runs (run directory + config) as child
  processes ``python -m crfold train``, ``jobs`` at a time, evaluates them, resumes on rerun, and
  stops cleanly on SIGINT/SIGTERM. It imports no task: any config of :data:`crfold.config.TASKS`
  trains through it.
* :mod:`.report` - reading the runs' ``eval.json`` / ``summary.json`` and the markdown pieces of
  a report: mean ± std cells over seeds, tables, Welch's t-test comparisons.
* :mod:`.plots` - training curves from ``metrics.jsonl`` (any task) and the FoldingNet figures
  (the Figure-1 analogue, reconstructions).
* :mod:`.table9` - a spec: the paper's Table 9 on FoldingNet (variants, plan, report), behind
  ``crfold experiment table9``.

A spec (Table 9 here; the image Tables 1-6 in :mod:`crfold_images.experiments`) supplies the
plan and writes its report from the runs' files::

    from crfold.experiments.runner import PlannedRun, run_plan
    from crfold.experiments.report import load_results
    runs = [PlannedRun(out / "runs" / name / f"seed{s}", cfg.replace(seed=s), label=name) ...]
    run_plan(runs, jobs=2)                     # trains, (evaluates), resumes; raises on failure
    rows = load_results(runs)                  # [{"run", "label", "seed", "eval", "summary"}]
"""
