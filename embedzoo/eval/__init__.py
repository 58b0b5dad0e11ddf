"""The eval wing: frozen embeddings of HEAR-layout tasks, HEAR's shallow downstream model, scores.

- `embedzoo.eval.tasks`      -- read HEAR 2021 task folders; write synthetic ones (`make-task`);
- `embedzoo.eval.embeddings` -- a model's embeddings of a task, computed once and cached;
- `embedzoo.eval.downstream` -- the shallow MLP, its hyper-parameter grid, event postprocessing;
- `embedzoo.eval.metrics`    -- the HEAR scores in numpy;
- `embedzoo.eval.evaluate`   -- `evaluate`: one model on one task, the results file and report;
- `embedzoo.eval.sweep`      -- `sweep`: a grid of knobs over several models, a CSV and plots.

Import from the modules (`from embedzoo.eval.evaluate import evaluate`): this package imports
nothing, so using one module of the wing loads only what that module needs.
"""
