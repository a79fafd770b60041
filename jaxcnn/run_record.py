"""What a run folder records, read back: its `RunConfig` and the `InputSpec` inference needs.

Reading these imports no training machinery (no checkpoints, steps or data pipeline), so
`compare` and the reports read run folders as cheaply as their JSON allows.
"""

from __future__ import annotations

import pathlib

from jaxcnn.config import ConfigError
from jaxcnn.inference.inputs import InputSpec
from jaxcnn.run_config import RunConfig
from jaxcnn.run_folder import read_run_config


def load_config(run_dir) -> RunConfig:
    """The recorded config of run folder `run_dir`; a ConfigError when it is not a jaxcnn run."""
    recorded = read_run_config(run_dir)
    try:
        return RunConfig.from_dict(recorded.get("config", recorded))
    except ConfigError as error:
        path = pathlib.Path(run_dir) / "config.json"
        raise ConfigError("resume", f"not a jaxcnn run folder: {path} is unreadable ({error})") from None


def read_inputs(run_dir, config: RunConfig) -> InputSpec:
    """The run's recorded `InputSpec`; for runs that predate it, derived from its dataset again
    (which reads the data set: the only path here that does)."""
    recorded = read_run_config(run_dir)
    if "inputs" in recorded:
        return InputSpec.from_dict(recorded["inputs"])
    from jaxcnn.data import load_data  # only for runs from before config.json held "inputs"

    data = load_data(config.data.name, config.data.dir, val_split=config.data.val_split, split_seed=config.seed,
                     image_size=config.data.decode_size(), label_mode=config.data.label_mode)
    return InputSpec.from_data(data, config)
