"""``deepatlas demo``: DeepAtlas end to end on built-in brain phantoms, no data, no download.

Builds a deterministic phantom dataset, trains DeepAtlas with 3 labelled and 12
unlabelled training images, trains the same seg net on the 3 labelled images
alone for as many seg-net updates, and compares both on held-out phantoms.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deepatlas.config import Config
from deepatlas.data import find_subjects, load_image_set, load_splits, load_training_data
from deepatlas.data.loading import select_split
from deepatlas.data.synthetic import make_dataset
from deepatlas.evaluation.evaluate import consecutive_pairs, evaluate_image_set
from deepatlas.files import atomic_write_text
from deepatlas.inference import load_run, register_with_net, segment_with_net
from deepatlas.networks.warp import warp_image, warp_labels
from deepatlas.run_folder import RunFolder
from deepatlas.training.run import train
from deepatlas.visualization import save_panels


def demo_config(dataset: Path, quick: bool = False) -> Config:
    config = Config()
    config.data.dataset = str(dataset)
    config.data.label_map = str(dataset / "labels.json")
    config.data.splits = str(dataset / "splits.json")
    config.data.num_labelled = 3
    s = config.schedule
    if quick:  # for tests: seconds, not minutes
        s.seg_pretrain_steps, s.reg_pretrain_steps, s.cycles, s.reg_steps_per_cycle, s.seg_steps_per_cycle = (
            4,
            4,
            2,
            3,
            2,
        )
        s.val_every, s.checkpoint_every = 10, 10
    else:
        s.seg_pretrain_steps, s.reg_pretrain_steps, s.cycles = 150, 150, 24
        s.reg_steps_per_cycle, s.seg_steps_per_cycle = 20, 6
        s.val_every, s.checkpoint_every = 100, 100
    return config


def seg_only_config(config: Config) -> Config:
    """The baseline: the same seg net, trained on the labelled images alone, for as many updates."""
    baseline = Config.from_dict(config.to_dict())
    s = baseline.schedule
    s.seg_pretrain_steps = (
        config.schedule.seg_pretrain_steps + config.schedule.cycles * config.schedule.seg_steps_per_cycle
    )
    s.reg_pretrain_steps, s.cycles = 0, 0
    return baseline


def run_demo(output: str | Path = "deepatlas-demo", quick: bool = False, progress: bool = True) -> dict:
    """Run the demo into ``output`` and return (and write) its results."""
    output = Path(output)
    shape = (32, 40, 32) if quick else (48, 56, 48)
    n = 10 if quick else 24
    dataset = output / "data"
    if not (dataset / "splits.json").exists():
        print(f"building {n} phantom subjects in {dataset}")
        make_dataset(
            dataset,
            num_subjects=n,
            shape=shape,
            seed=0,
            splits={
                "train": n - 6 - 3 if not quick else 6,
                "validation": 3 if not quick else 2,
                "test": 6 if not quick else 2,
            },
        )
    config = demo_config(dataset, quick)
    data = load_training_data(config.data, progress=progress)
    results: dict = {"labelled": data.labelled_ids, "unlabelled": len(data.train) - len(data.labelled_ids)}
    for name, cfg in (("deepatlas", config), ("seg-only", seg_only_config(config))):
        run_dir = output / name
        resume = RunFolder(run_dir).checkpoint("last").exists()
        print(f"training {name} -> {run_dir}" + (" (resuming)" if resume else ""))
        train(cfg, run_dir, resume=resume, progress=progress, data=data)

    splits = load_splits(config.data.splits)
    test = load_image_set(
        select_split(find_subjects(dataset), splits, "test", config.data.splits), data.scheme, progress=False
    )
    deepatlas, seg_only = load_run(output / "deepatlas"), load_run(output / "seg-only")
    ours = evaluate_image_set(test, deepatlas.seg_net, deepatlas.reg_net)
    base = evaluate_image_set(test, seg_only.seg_net)
    results.update(
        {
            "test_subjects": test.ids,
            "deepatlas_seg_dice": ours["seg_dice"],
            "seg_only_seg_dice": base["seg_dice"],
            "deepatlas_reg_dice": ours["reg_dice"],
            "reg_dice_before_registration": ours["reg_dice_before"],
            "deepatlas_folds": ours["folds"],
            "per_class": {
                name: {"deepatlas": a, "seg_only": b}
                for name, a, b in zip(data.scheme.names[1:], ours["seg_dice_per_class"], base["seg_dice_per_class"])
            },
        }
    )
    figure = _figure(test, deepatlas, seg_only, output / "demo.png")
    results["figure"] = str(figure)
    atomic_write_text(output / "results.json", json.dumps(results, indent=1))
    _print(results, output)
    return results


def _figure(test, deepatlas, seg_only, path: Path) -> Path:
    k = test.scheme.num_classes
    ours = segment_with_net(deepatlas.seg_net, test.images[:1])[0, 0].numpy()
    base = segment_with_net(seg_only.seg_net, test.images[:1])[0, 0].numpy()
    moving, fixed = consecutive_pairs(len(test))[0]
    ddf = register_with_net(deepatlas.reg_net, test.images[[moving]], test.images[[fixed]])
    warped = warp_image(test.images[[moving]], ddf)[0, 0].numpy()
    warped_labels = warp_labels(test.labels[[moving]].to(torch.int16), ddf)[0, 0].numpy()
    image = test.images[0, 0].numpy()
    return save_panels(
        [
            ("test image + manual labels", image, test.labels[0, 0].numpy()),
            ("DeepAtlas seg net", image, ours),
            ("seg net on labelled only", image, base),
            ("moving", test.images[moving, 0].numpy(), test.labels[moving, 0].numpy()),
            ("fixed", test.images[fixed, 0].numpy(), test.labels[fixed, 0].numpy()),
            ("moving warped to fixed", warped, warped_labels),
        ],
        path,
        num_classes=k,
    )


def _print(results: dict, output: Path) -> None:
    print(
        "\nDeepAtlas demo, held-out phantoms "
        f"({len(results['test_subjects'])} images; {len(results['labelled'])} labelled, "
        f"{results['unlabelled']} unlabelled for training)"
    )
    print(
        f"  segmentation Dice  DeepAtlas {results['deepatlas_seg_dice']:.3f}   "
        f"seg net on labelled only {results['seg_only_seg_dice']:.3f}"
    )
    print(
        f"  registration Dice  {results['deepatlas_reg_dice']:.3f} "
        f"(before registration {results['reg_dice_before_registration']:.3f}), "
        f"folds {100 * results['deepatlas_folds']:.3f}% of voxels"
    )
    print(f"outputs: {output}/ (runs deepatlas/ and seg-only/, results.json, figure demo.png)")
