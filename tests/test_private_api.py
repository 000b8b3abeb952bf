"""The private Lightning (and one OmegaConf) names the project still uses, for want of a public way (each
use says why).

Each test fails when the locked library renames, removes or re-signs one of them, so an upgrade shows
where the project must change instead of failing inside a DDP job or at the end of a training run.
"""

from __future__ import annotations

import inspect

from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.trainer.connectors import accelerator_connector

from iqs.train.distributed import ReplayDDPStrategy, ReplayLauncher


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_replay_launcher_overrides_what_lightning_calls() -> None:
    """iqs.train.distributed: the launcher hook of DDPStrategy and the child-starting step of the launcher."""
    assert _params(DDPStrategy._configure_launcher) == ["self"]
    assert _params(_SubprocessScriptLauncher._call_children_scripts) == ["self"]
    assert _params(_SubprocessScriptLauncher._check_can_spawn_children) == ["self"]
    assert _params(_SubprocessScriptLauncher.__init__) == [
        "self",
        "cluster_environment",
        "num_processes",
        "num_nodes",
    ]
    # the connector still asks the strategy for its launcher through the overridden hook
    assert "strategy._configure_launcher()" in inspect.getsource(accelerator_connector)
    # launch() still starts the children through the overridden method, and keeps them in `procs`
    launch = inspect.getsource(_SubprocessScriptLauncher.launch)
    assert "self._call_children_scripts()" in launch
    assert "self.procs" in inspect.getsource(_SubprocessScriptLauncher.__init__)
    assert ReplayLauncher._call_children_scripts is not _SubprocessScriptLauncher._call_children_scripts
    assert ReplayDDPStrategy._configure_launcher is not DDPStrategy._configure_launcher
    # the strategy attributes the override reads and sets
    init = inspect.getsource(DDPStrategy.__init__) + inspect.getsource(DDPStrategy._configure_launcher)
    assert "self._start_method" in init and "self._launcher" in init


def test_mlflow_logger_checkpoint_upload() -> None:
    """iqs.tracking.lightning_logger: the checkpoint upload that `finalize` runs, without ending the run."""
    assert _params(MLFlowLogger._scan_and_log_checkpoints) == ["self", "checkpoint_callback"]
    finalize = inspect.getsource(MLFlowLogger.finalize)
    assert "self._scan_and_log_checkpoints(self._checkpoint_callback)" in finalize
    assert "self._checkpoint_callback" in inspect.getsource(MLFlowLogger.__init__)
    # every call of the logger goes through the public `experiment` property, which the run-bound logger
    # overrides with the run's client
    scan = inspect.getsource(MLFlowLogger._scan_and_log_checkpoints)
    log_metrics = inspect.getsource(MLFlowLogger.log_metrics)
    assert "self.experiment.log_artifact" in scan and "self.experiment.log_batch" in log_metrics
    assert "_mlflow_client" not in scan + log_metrics


def test_ddp_sampler_wrapper_keeps_the_sampler() -> None:
    """iqs.train.resume: under DDP the weighted sampler whose generator a checkpoint restores sits at
    `DistributedSamplerWrapper(...).dataset._sampler` (lightning_fabric has no public accessor)."""
    import torch
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    from iqs.train.resume import sampler_state

    inner = torch.utils.data.WeightedRandomSampler([1.0, 2.0, 3.0], 6, generator=torch.Generator())
    wrapper = DistributedSamplerWrapper(inner, num_replicas=2, rank=0)
    assert wrapper.dataset._sampler is inner
    loader = torch.utils.data.DataLoader(range(3), sampler=wrapper)
    assert "sampler.dataset._sampler" in sampler_state(loader)


def test_omegaconf_full_key_names_a_dataset_setting() -> None:
    """iqs.data.adapters.reading: an adapter's error names the key as the user spells it on the command line
    (`data.sources.<name>.<key>`), from OmegaConf's `_get_full_key` (no public way to a node's path)."""
    from omegaconf import OmegaConf

    from iqs.data.adapters.reading import config_key, setting

    cfg = OmegaConf.create({"data": {"sources": {"ava": {"name": "ava", "root": None}}}})
    node = cfg.data.sources.ava
    assert config_key(node, "root") == "data.sources.ava.root"
    assert setting(node, "root", "/data/AVA") == "data.sources.ava.root=/data/AVA"
