"""`python -m study.erf`: effective receptive fields of zoo models (see conf/erf.yaml, README.md).

python -m study.erf model=resnet50,deit_small_patch16_224 img_size=512 n_images=8
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from study.erf.run import listify_argv, run


@hydra.main(version_base="1.3", config_path="../../conf", config_name="erf")
def app(cfg: DictConfig) -> None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # one folder per job, not one shared
        with open_dict(cfg):
            cfg.out_dir = HydraConfig.get().runtime.output_dir
    try:
        run(cfg)
    except (ValueError, OSError) as err:  # bad input: one line, no traceback
        print(f"study.erf: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            f"study.erf: interrupted; {cfg.out_dir} is as it was before this run (nothing of the "
            "run was kept); run the same command again to compute it",
            file=sys.stderr,
        )
        sys.exit(130)


def main() -> None:
    sys.argv[1:] = listify_argv(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
