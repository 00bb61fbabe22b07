"""The DeepAtlas trainer: alternating phases, checkpoints, validation and logs."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepatlas.checkpoint import check_finite_weights, load_checkpoint, save_checkpoint
from deepatlas.config import Config
from deepatlas.data.augment import augment, mirror, mirror_plan
from deepatlas.data.dataset import ImageSet
from deepatlas.device import amp_dtype, autocast, select_device
from deepatlas.evaluation.evaluate import evaluate_image_set
from deepatlas.networks.factory import build_networks
from deepatlas.registration.pipeline import build_pipeline
from deepatlas.run_folder import RunFolder, resolve_run
from deepatlas.training.batches import BatchDrawer
from deepatlas.training.blur import random_blur
from deepatlas.training.distributed import World, rank_device
from deepatlas.training.faults import NonFiniteLoss, first_nonfinite, gradient_buffer, unflatten_into_grads
from deepatlas.training.hypointensity import hypointensity_indices, random_hypointensity
from deepatlas.training.logger import MetricsLogger
from deepatlas.training.objectives import DeepAtlasObjectives
from deepatlas.training.resize import resize_indices, resize_structures
from deepatlas.training.schedule import Schedule, lr_scale
from deepatlas.training.teachers import TeacherCache, seg_net_labels


def set_trainable(net: torch.nn.Module, trainable: bool) -> None:
    """Train mode with gradients, or eval mode (dropout off, norm statistics fixed) without."""
    net.train(trainable)
    for p in net.parameters():
        p.requires_grad_(trainable)


class Trainer:
    """Trains a registration net and a segmentation net jointly on an :class:`ImageSet`.

    Args:
        config: the run's configuration (networks, losses, schedule, device).
        train: training images; ``has_label`` says which labels training may use.
        validation: labelled images for model selection (``best.pt``), or None.
        run_dir: where checkpoints, ``metrics.jsonl`` and TensorBoard logs go; None keeps nothing.
        progress: show a tqdm bar.
        world: the training processes (:mod:`deepatlas.training.distributed`); only the main
            one writes to ``run_dir`` and validates, every one trains on its slice of each batch.
    """

    def __init__(
        self,
        config: Config,
        train: ImageSet,
        validation: ImageSet | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
        world: World | None = None,
    ) -> None:
        self.world = world or World()
        self.config, self.train_set = config, train
        self.validation = validation if self.world.is_main else None
        self.run_dir = Path(run_dir) if run_dir is not None and self.world.is_main else None
        self.progress = progress and self.world.is_main
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = select_device(rank_device(config.device, self.world))
        self.amp = amp_dtype(self.device, config.amp)
        # the data's and the batch's errors before any network is built; the draws start later
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batches = BatchDrawer(train, config.schedule, self.generator, self.world, self.device)
        self.labelled, self.unlabelled = self.batches.labelled, self.batches.unlabelled
        self.num_classes = train.scheme.num_classes
        self.reg_net, self.seg_net = build_networks(config, train.spatial_dims, self.num_classes)
        if config.init_from:
            self._start_from(config.init_from)
        self.reg_net.to(self.device)
        self.seg_net.to(self.device)
        self.objectives = DeepAtlasObjectives(
            self.reg_net, self.seg_net, self.num_classes, config.loss, config.teachers.loss
        )
        self.reg_opt = torch.optim.Adam(self.reg_net.parameters(), lr=config.schedule.reg_lr)
        self.seg_opt = torch.optim.Adam(self.seg_net.parameters(), lr=config.schedule.seg_lr)
        # fp16 needs loss scaling; bf16 and float32 do not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.schedule = Schedule.from_config(config.schedule)
        # no teachers where nothing reads them: every image labelled, or no anatomy loss in the seg step
        wanted = config.teachers.active(len(self.labelled)) and self.batches.seg_pairs is not None
        wanted = wanted and config.loss.anatomy_weight_seg > 0
        self.teachers = self._teacher_cache() if wanted else None
        self.augmenting = config.augment.active(len(self.labelled), config.data.normalize)
        self.resized = resize_indices(config.augment.resize_classes, train.scheme.names)
        self.sampled = resize_indices(
            config.augment.resize_sampled_classes, train.scheme.names, "resize_sampled_classes"
        )
        flip = config.augment.flip > 0
        self.mirroring = mirror_plan(train.scheme, train.affines, train.spatial_dims) if flip else None
        self.hypointense = self._hypointensity_plan(train)
        self.seg_variant = self.seg_step_variant()
        self.step = 0
        self.best_score = float("-inf")
        self.elapsed = 0.0  # seconds spent in fit(), summed over resumes: the time budget's clock
        self.stopped_by: str | None = None

    def _hypointensity_plan(self, train) -> tuple[list[int], list[int]] | None:
        """The class indices ``augment.hypointensity`` darkens around and within (None when it is off)."""
        cfg = self.config.augment
        if cfg.hypointensity <= 0:
            return None
        if train.spatial_dims != 3:
            raise ValueError("config augment.hypointensity darkens 3D brains only: set augment.hypointensity=0")
        return hypointensity_indices(cfg.hypointensity_near, cfg.hypointensity_within, train.scheme.names)

    def _start_from(self, run: str) -> None:
        """Both networks' weights from the best checkpoint of ``run`` (``init_from``), checked to fit."""
        path = RunFolder(resolve_run(run)).checkpoint("best")
        state = load_checkpoint(path if path.exists() else path.with_name("last.pt"))
        if int(state.get("num_classes", -1)) != self.num_classes:
            raise ValueError(
                f"config init_from={run}: it segments {state.get('num_classes')} classes (background included), "
                f"this run's label map {self.num_classes}; fine-tune with the same label map"
            )
        try:
            self.reg_net.load_state_dict(state["reg_net"])
            self.seg_net.load_state_dict(state["seg_net"])
        except RuntimeError:
            raise ValueError(
                f"config init_from={run}: its networks differ from this config's; give seg_net and reg_net "
                f"the settings of its config.yaml"
            ) from None

    def _teacher_cache(self) -> TeacherCache:
        """Refined atlas labels for unlabelled images (``teachers.enabled``, ``auto`` by default), registered by the
        current reg net + the run's ``refine`` settings (levels and iterations: ``teachers.refine_*``)."""
        cfg = self.config
        refine = cfg.teachers.refine_settings(cfg.refine)
        return TeacherCache(
            self.train_set.images,
            self.train_set.labels,
            self.labelled,
            lambda: build_pipeline(cfg, self.reg_net, refine=refine),
            cfg.teachers.refresh_steps,
            seed=cfg.seed + 1000 * self.world.rank,
            device=self.device,
            atlases=cfg.teachers.atlases,
            max_share=cfg.teachers.max_share,
            synthesise=cfg.teachers.synthesis > 0,
            appearance=cfg.teachers.synthesis_appearance,
            **self._self_teaching(),
        )

    def _self_teaching(self) -> dict:
        """The teacher cache's ``self_teacher`` and ``self_teach_from`` (``teachers.self_teach_after`` of the
        time budget), or nothing where it is off. The seg net predicts with mirroring where the label
        scheme allows it (every side-named class has its twin), in the run's precision."""
        share, budget = self.config.teachers.self_teach_after, self.config.schedule.time_budget_minutes
        if share <= 0 or budget is None:
            return {}
        train = self.train_set
        try:
            mirroring = mirror_plan(train.scheme, train.affines, train.spatial_dims)
        except ValueError:  # a side without its twin, or grids that disagree on left-right: one pass
            mirroring = None

        def predict(image: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.amp):
                return seg_net_labels(self.seg_net, image, mirroring)

        return {"self_teacher": predict, "self_teach_from": share * budget * 60}

    # ----------------------------------------------------------------- steps
    def _optimize(self, losses: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, pairs: str) -> dict:
        """Backpropagate, average the gradients over the processes, and step unless anything is
        non-finite (then :class:`NonFiniteLoss`, before the weights change). Returns the loss terms."""
        values = {k: float(v.detach()) for k, v in losses.items()}
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        buffer = self.world.sum_(gradient_buffer(params, losses["loss"]))
        # fp16 loss scaling makes infinite gradients on purpose (the scaler skips those steps)
        checked = buffer[-1:] if self.scaler.is_enabled() else buffer
        if not bool(torch.isfinite(checked).all()):
            phase = self.schedule.phase_at(self.step)
            raise NonFiniteLoss(self.step + 1, phase, first_nonfinite(values) or "gradient", pairs)
        if self.world.size > 1:
            unflatten_into_grads(params, buffer[:-1] / self.world.size)
        self.scaler.step(optimizer)
        self.scaler.update()
        return values

    def reg_step(self, use_anatomy: bool = True, group: str | None = None) -> dict[str, float]:
        """One registration step with the seg net frozen (anatomy loss off: unsupervised pre-training)."""
        set_trainable(self.seg_net, False)
        set_trainable(self.reg_net, True)
        batch = self.batches.pairs(self.batches.reg_pairs, group)
        if use_anatomy and self.teachers is not None and self.config.teachers.guide_registration:
            batch = self.teachers.label_unlabelled_sides(batch)
        with autocast(self.device, self.amp):
            losses = self.objectives.registration(batch, use_anatomy=use_anatomy)
        pairs = self.batches.describe(batch.moving_index, batch.fixed_index)
        return {"group": batch.group, **self._optimize(losses, self.reg_opt, pairs)}

    def seg_step_variant(self) -> str:
        """Which segmentation step this run takes (:data:`deepatlas.options.SEG_STEPS`), chosen once from its data and
        settings: ``supervised`` when every training image is labelled (no pairs to draw), ``distil``
        with teachers taught as labels (``teachers.loss: distil``; synthesised images among them with
        ``teachers.synthesis``), else DeepAtlas' ``pair`` step."""
        if self.batches.seg_pairs is None:
            return "supervised"
        return "distil" if self.teachers is not None and self.config.teachers.loss == "distil" else "pair"

    def seg_step(self, group: str | None = None) -> dict[str, float]:
        """One segmentation step with the reg net frozen, of this run's variant (:meth:`seg_step_variant`;
        ``group``: the pair group of a ``pair`` step, None to draw one)."""
        variant = self.seg_variant
        if variant == "pair":
            return self.pair_step(group)
        return self.seg_pretrain_step() if variant == "supervised" else self.distil_step()

    def pair_step(self, group: str | None = None) -> dict[str, float]:
        """DeepAtlas' segmentation step on a pair (a labelled and an unlabelled image, or two of either):
        supervised where labelled, the other image's labels warped by the frozen reg net (or its
        teacher) where not."""
        set_trainable(self.reg_net, False)
        set_trainable(self.seg_net, True)
        swap = None if self.teachers is None else partial(self.teachers.teachable, elapsed=self.elapsed)
        batch = self.batches.pairs(self.batches.seg_pairs, group, swap)
        teachers, extra = None, {}
        if self.teachers is not None and not (batch.moving_labelled and batch.fixed_labelled):
            before = self.teachers.seconds
            unlabelled = batch.fixed_index if batch.moving_labelled else batch.moving_index
            teachers = self.teachers.labels_for(unlabelled, self.step, self.elapsed)
            extra = {"teacher_seconds": self.teachers.seconds - before, "teachers": float(len(self.teachers.teachers))}
        with autocast(self.device, self.amp):
            losses = self.objectives.segmentation(batch, teachers, self._augment)
        pairs = self.batches.describe(batch.moving_index, batch.fixed_index)
        return {"group": batch.group, **self._optimize(losses, self.seg_opt, pairs), **extra}

    def seg_pretrain_step(self) -> dict[str, float]:
        """One supervised step of the seg net on labelled images alone."""
        set_trainable(self.reg_net, False)
        set_trainable(self.seg_net, True)
        chosen = self.batches.labelled_batch()
        images, labels = self._augment(*self.batches.to_device(chosen))
        with autocast(self.device, self.amp):
            losses = self.objectives.supervised_only(images, labels)
        return self._optimize(losses, self.seg_opt, self.batches.describe(chosen))

    def distil_step(self) -> dict[str, float]:
        """A supervised step of the seg net on labelled images and on unlabelled ones with their
        teachers as labels (``teachers.loss=distil``), one pass per image: ``teachers.taught_share``
        of the batch taught (half by default), drawn for the whole batch, sliced per process."""
        set_trainable(self.reg_net, False)
        set_trainable(self.seg_net, True)
        teachable = partial(self.teachers.teachable, elapsed=self.elapsed)
        chosen, mine = self.batches.distil_batch(self.step, teachable, self.config.teachers.taught_share)
        before = self.teachers.seconds
        teachers = self.teachers.labels_for(mine, self.step, self.elapsed) if mine else None
        extra = {"teacher_seconds": self.teachers.seconds - before, "teachers": float(len(self.teachers.teachers))}
        images, labels = self.batches.to_device(chosen)
        if teachers is not None:  # the taught images come last in the batch
            labels = torch.cat([labels[: len(chosen) - len(mine)], teachers])
            images, labels = self._synthesised_places(images, labels, mine)
        images, labels = self._augment(images, labels)
        with autocast(self.device, self.amp):
            losses = self.objectives.supervised_only(images, labels)
        return {**self._optimize(losses, self.seg_opt, self.batches.describe(chosen)), **extra}

    def _synthesised_places(
        self, images: torch.Tensor, labels: torch.Tensor, taught: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The distilled batch (taught images last) with each taught place, at odds
        ``teachers.synthesis``, given to the synthesised labelled image made with that image's
        teacher (:mod:`deepatlas.training.synthesis`). One draw per place of the global batch from
        the run's generator, whatever this process's share, so every process keeps drawing alike."""
        share = self.config.teachers.synthesis
        if share <= 0:
            return images, labels
        draws = torch.rand(self.batches.size, generator=self.generator)[: len(taught)] < share
        first = len(images) - len(taught)
        places = [first + k for k in range(len(taught)) if draws[k]]
        if places:
            synth_images, synth_labels = self.teachers.synthetic_for([taught[p - first] for p in places])
            images, labels = images.clone(), labels.clone()
            images[places], labels[places] = synth_images.to(images.dtype), synth_labels
        return images, labels

    def _augment(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels for a supervised loss, randomly changed when augmenting
        (``augment.enabled``; ``auto``: with few labelled images).

        One draw from the run's generator per call, whatever the batch: every process makes the
        same draws from it and so keeps drawing the same global batches (a process's number of
        distinct labelled images may differ from another's); each then augments with its own
        stream, seeded by that draw and its rank. In float32, outside autocast: a bf16 sampling
        grid would misplace voxels by up to a tenth of one."""
        if not self.augmenting:
            return images, labels
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        stream = torch.Generator().manual_seed(seed + self.world.rank)
        cfg = self.config.augment
        with torch.autocast(self.device.type, enabled=False):
            images, labels = resize_structures(
                images,
                labels,
                cfg.resize,
                cfg.resize_structures,
                stream,
                self.resized,
                cfg.resize_image,
                cfg.resize_labels,
                self.sampled,
            )
            if cfg.flip > 0:  # no draw when off: runs without it keep their random streams
                chosen = torch.rand(len(images), generator=stream) < cfg.flip
                images, labels = mirror(images, labels, chosen.to(images.device), *self.mirroring)
            images = random_hypointensity(images, labels, cfg.hypointensity, self.hypointense, stream)
            images = random_blur(images, cfg.blur, stream)
            return augment(images, labels, cfg, stream)

    def train_step(self) -> tuple[str, dict[str, float]]:
        """Run the step the schedule prescribes at ``self.step`` and advance."""
        phase = self.schedule.phase_at(self.step)
        scale = self._set_learning_rates()
        if phase == "seg_pretrain":
            losses = self.seg_pretrain_step()
        elif phase == "reg_pretrain":
            losses = self.reg_step(use_anatomy=False)
        elif phase == "reg":
            losses = self.reg_step()
        else:
            losses = self.seg_step()
        self.step += 1
        return phase, losses if scale is None else {**losses, "lr_scale": scale}

    def run_fraction(self) -> float:
        """How far the run is (0 to 1): by steps through the schedule or seconds through the time
        budget, whichever is further."""
        budget = self.config.schedule.time_budget_minutes
        by_time = 0.0 if budget is None else self.elapsed / (budget * 60)
        return max(self.step / max(self.schedule.total, 1), by_time)

    def _set_learning_rates(self) -> float | None:
        """The configured rates times ``lr_scale`` (``schedule.lr_decay``; None when off): set at
        every step, so a resumed run, whose optimisers load with the configured rates, goes on where it was."""
        cfg = self.config.schedule
        if cfg.lr_decay <= 0:
            return None
        # each process keeps its own clock: all take the furthest, so that their weights stay equal
        scale = lr_scale(self.world.max(self.run_fraction()), cfg.lr_decay)
        for optimizer, lr in ((self.reg_opt, cfg.reg_lr), (self.seg_opt, cfg.seg_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
        return scale

    # ------------------------------------------------------------ evaluation
    def validate(self) -> dict:
        if self.validation is None:
            return {}
        return evaluate_image_set(self.validation, self.seg_net, self.reg_net, amp=self.amp)

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "best_score": self.best_score,
            "elapsed_s": self.elapsed,
            "reg_net": self.reg_net.state_dict(),
            "seg_net": self.seg_net.state_dict(),
            "reg_opt": self.reg_opt.state_dict(),
            "seg_opt": self.seg_opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": self.config.to_dict(),
            "label_scheme": self.train_set.scheme.to_dict(),
            "spatial_dims": self.train_set.spatial_dims,
            "num_classes": self.num_classes,
            "grid_shape": list(self.train_set.shape),
            "grid_affine": [[float(v) for v in row] for row in self.train_set.affines[0]],
        }

    def load_state_dict(self, state: dict) -> None:
        if self.teachers is not None and "teachers" in state:
            self.teachers.load_state_dict(state["teachers"])
        self.reg_net.load_state_dict(state["reg_net"])
        self.seg_net.load_state_dict(state["seg_net"])
        self.reg_opt.load_state_dict(state["reg_opt"])
        self.seg_opt.load_state_dict(state["seg_opt"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.best_score = float(state["best_score"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        # the config's learning rates win over the saved ones: resume may lower them
        for optimizer, lr in ((self.reg_opt, self.config.schedule.reg_lr), (self.seg_opt, self.config.schedule.seg_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def save(self, path: str | Path, resumable: bool = True) -> Path:
        """Write the training state to ``path``; ``resumable`` adds the teachers (``last``, not ``best``)."""
        state = self.state_dict()
        if resumable and self.teachers is not None:
            state["teachers"] = self.teachers.state_dict()
        check_finite_weights(state, ("reg_net", "seg_net"), path)  # never replace a good checkpoint by a bad one
        return save_checkpoint(state, path)

    def resume(self, path: str | Path) -> None:
        # on the CPU: random generator states must stay CPU tensors, and the nets' and optimisers'
        # load_state_dict copy onto their own devices
        state = load_checkpoint(path, map_location="cpu")
        check_finite_weights(state, ("reg_net", "seg_net"), path)
        self.load_state_dict(state)

    # ------------------------------------------------------------------ loop
    def budget_left(self) -> float:
        """Seconds of ``schedule.time_budget_minutes`` left (inf without a budget)."""
        budget = self.config.schedule.time_budget_minutes
        return float("inf") if budget is None else budget * 60 - self.elapsed

    def fit(self, max_steps: int | None = None) -> dict:
        """Train from ``self.step`` to the end of the schedule, the time budget or ``max_steps`` more steps.

        Checkpoints ``checkpoints/last.pt`` every ``checkpoint_every`` steps and at the
        end; ``checkpoints/best.pt`` when the validation score (mean of segmentation and
        registration Dice) improves. Validates once more where the time budget ends the
        run, so the last state can be selected too. ``self.stopped_by`` says what ended
        it (``schedule``, ``time budget`` or ``max_steps``). Returns the last validation metrics.
        """
        end = self.schedule.total if max_steps is None else min(self.schedule.total, self.step + max_steps)
        logger = MetricsLogger(self.run_dir, resume_step=self.step) if self.run_dir else None
        bar = tqdm(
            total=self.schedule.total,
            initial=self.step,
            disable=not self.progress,
            desc="deepatlas",
            dynamic_ncols=True,
        )
        last_val: dict = {}
        clock = time.perf_counter()
        self.stopped_by = None

        def tick() -> None:
            nonlocal clock
            now = time.perf_counter()
            self.elapsed += now - clock
            clock = now

        try:
            over = self.world.any(self.budget_left() <= 0)
            while self.step < end and not over:
                start = time.perf_counter()
                phase, losses = self.train_step()
                seconds = time.perf_counter() - start
                if logger:
                    logger.log(self.step, phase, {**losses, "seconds": seconds})
                bar.update(1)
                bar.set_postfix(phase=phase, loss=f"{losses['loss']:.4f}", s_per_step=f"{seconds:.2f}")
                tick()
                over = self.world.any(self.budget_left() <= 0)  # every process stops at the same step
                last_val = self._after_step(logger, end, over) or last_val
                tick()
            done = self.step >= self.schedule.total
            self.stopped_by = "schedule" if done else "time budget" if over else "max_steps"
        finally:
            tick()
            bar.close()
            if logger:
                logger.close()
        return last_val

    def _after_step(self, logger: MetricsLogger | None, end: int, over_budget: bool) -> dict | None:
        """Validate and checkpoint when due; where the budget ends the run, its last state too."""
        cfg, metrics = self.config.schedule, None
        final = self.step == self.schedule.total or over_budget
        if self.validation is not None and cfg.val_every and (self.step % cfg.val_every == 0 or final):
            metrics = self._validate_and_select(logger)
        if self.run_dir and (self.step % cfg.checkpoint_every == 0 or final or self.step == end):
            self.save(RunFolder(self.run_dir).checkpoint("last"))
        return metrics

    def _validate_and_select(self, logger: MetricsLogger | None) -> dict:
        metrics = self.validate()
        scores = [metrics[k] for k in ("seg_dice", "reg_dice") if k in metrics]
        score = sum(scores) / len(scores) if scores else float("-inf")
        if logger:
            logger.log(self.step, "validation", {k: v for k, v in metrics.items() if not isinstance(v, list)})
        if score > self.best_score:
            self.best_score = score
            if self.run_dir:
                self.save(RunFolder(self.run_dir).checkpoint("best"), resumable=False)
                folder = RunFolder(self.run_dir)
                folder.write_json(folder.best_validation, {"step": self.step, **metrics})
        return metrics
