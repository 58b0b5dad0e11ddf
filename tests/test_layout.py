"""The core's folders (eval wing, weights wing, input discovery): old imports still work, and the
light entry points stay torch-free."""

from __future__ import annotations

import subprocess
import sys


def test_compatibility_modules_are_the_new_homes():
    import embedzoo.audio
    import embedzoo.cache
    import embedzoo.downstream
    import embedzoo.evaluate
    import embedzoo.hub
    import embedzoo.metrics
    import embedzoo.tasks
    from embedzoo import inputs, remap, weights
    from embedzoo.eval import downstream, embeddings, evaluate, metrics, sweep, tasks
    from embedzoo.weights import cache, fetch, store

    assert embedzoo.hub.unwrap_state_dict is remap.unwrap_state_dict is weights.unwrap_state_dict
    assert embedzoo.hub.fetch_source is fetch.fetch_source and embedzoo.hub.pull is store.pull
    assert embedzoo.hub.convert_checkpoint is store.convert_checkpoint and embedzoo.hub.is_cached is cache.is_cached
    assert embedzoo.cache.sha256_file is cache.sha256_file and embedzoo.cache.cache_key is cache.cache_key
    assert embedzoo.evaluate.evaluate is evaluate.evaluate and embedzoo.evaluate.sweep is sweep.sweep
    assert embedzoo.evaluate.ModelHandle is embeddings.ModelHandle and embedzoo.evaluate.embedding_key is embeddings.embedding_key
    assert embedzoo.tasks.make_task is tasks.make_task and embedzoo.metrics.get_scores is metrics.get_scores
    assert embedzoo.downstream.run_downstream is downstream.run_downstream
    assert embedzoo.audio.collect_inputs is inputs.collect_inputs and embedzoo.audio.InputFile is inputs.InputFile


def test_light_modules_never_import_torch():
    code = (
        "import sys\n"
        "import embedzoo.hub, embedzoo.cache, embedzoo.weights, embedzoo.remap, embedzoo.spec, embedzoo.knobs, embedzoo.eval, embedzoo.cli\n"
        "from embedzoo.spec import ModelSpec\n"
        "ModelSpec.parse('crepe-tiny?weights=random')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
