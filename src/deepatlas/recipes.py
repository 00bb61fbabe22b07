"""Named training recipes: sets of settings that were measured together and pay together.

A recipe is a list of ``section.key=value`` overrides applied before the user's own (which win),
so a run folder's ``config.yaml`` holds the values it trained with, not the recipe's name.
``deepatlas train --recipe distil``; from Python, ``load_config(path, recipe_overrides("distil") + [...])``.
"""

from __future__ import annotations

from deepatlas import options

RECIPES: dict[str, tuple[str, ...]] = {
    "default": (),
    # Distilled multi-atlas teachers (docs/results.md, "Five labelled images: distilled teachers").
    # Every unlabelled image gets a teacher once, early: the vote of 3 labelled images registered to
    # it by net + refinement from the start of coarse levels (the reg net is new, so 4x, 2x and full
    # resolution, 60/20/5 Adam steps), within a quarter of the time. Seg steps are supervised steps
    # on one labelled and one taught image, as cheap as the seg net alone's. Reg steps (half of
    # them: cycles of 10 : 10) read the teachers in their anatomy loss instead of the seg net's
    # prediction ("guided", docs/results.md "Guided, reg-heavier cycles"). No pre-training.
    # Measured on ixi-2mm validation, 5 labelled images, 2 CPU cores, 45 minutes, seeds 0-2: seg
    # Dice 0.800 against 0.687 for the seg net alone (every seed by 8.8+ points), reg Dice 0.718
    # against 0.713 for the reg net alone (the unguided 2 : 10 cycles: 0.802 and 0.683). At 15
    # minutes the unguided recipe lost to the seg net alone (-1.7): give it 45 minutes or more.
    "distil": (
        "schedule.seg_pretrain_steps=0",
        "schedule.reg_pretrain_steps=0",
        f"schedule.cycles={options.UNTIL_BUDGET}",
        "schedule.reg_steps_per_cycle=10",
        "schedule.seg_steps_per_cycle=10",
        "teachers.guide_registration=true",
        "schedule.time_budget_minutes=45",
        "teachers.enabled=on",
        "teachers.loss=distil",
        "teachers.atlases=3",
        "teachers.max_share=0.25",
        f"teachers.refresh_steps={options.UNTIL_BUDGET}",  # never refresh: a teacher is made once
        "teachers.refine_levels=[4,2,1]",
        "teachers.refine_iterations=[60,20,5]",
    ),
    # Registration as the seg net's augmenter (Zhao et al. 2019; docs/results.md "Registration as the seg
    # net's augmenter"): every unlabelled image gets, once, a labelled image and its labels warped
    # together onto it by refinement from zero (the distil recipe's 4x/2x/full schedule), its
    # appearance matched to it (training/synthesis.py): exact labels on a real subject's anatomy.
    # Seg steps of one image, the labelled one and a synthesised one in turn (as cheap as the seg net
    # alone's one-shot steps), augmented; no reg steps (the pairs are made once and do not read the
    # reg net again). Chosen on ixi-2mm validation with one labelled image, 45 minutes, against the
    # augmented seg net alone on the same cores, and against cheaper (coarser) pairs, which lost more
    # per step than their time bought: docs/results.md "Registration as the seg net's augmenter".
    "synthesis": (
        "schedule.seg_pretrain_steps=0",
        "schedule.reg_pretrain_steps=0",
        f"schedule.cycles={options.UNTIL_BUDGET}",
        "schedule.reg_steps_per_cycle=0",
        "schedule.seg_steps_per_cycle=10",
        "schedule.batch_size=1",
        "schedule.time_budget_minutes=45",
        "teachers.enabled=on",
        "teachers.loss=distil",
        "teachers.atlases=1",
        "teachers.synthesis=1",
        "teachers.max_share=0.25",
        f"teachers.refresh_steps={options.UNTIL_BUDGET}",
        "teachers.refine_levels=[4,2,1]",
        "teachers.refine_iterations=[60,20,5]",
        "augment.enabled=on",
    ),
    # the baselines DeepAtlas is compared with, for the same budget (a user's own comparison): the
    # seg net alone, supervised on the labelled images, augmented at every N (the strong baseline:
    # on ixi-2mm validation, 45 minutes, seed 0's draw, augmentation lifted it from 0.635 to 0.764 at
    # 1 labelled image and from 0.740 to 0.813 at 5, where without it it memorised); the reg net alone, unsupervised
    "seg-only": (
        f"schedule.seg_pretrain_steps={options.UNTIL_BUDGET}",
        "schedule.reg_pretrain_steps=0",
        "schedule.cycles=0",
        "schedule.time_budget_minutes=45",
        "augment.enabled=on",
    ),
    "reg-only": (
        "schedule.seg_pretrain_steps=0",
        f"schedule.reg_pretrain_steps={options.UNTIL_BUDGET}",
        "schedule.cycles=0",
        "schedule.time_budget_minutes=45",
    ),
}
"""Recipe name -> its overrides. Every recipe but ``default`` trains until
``schedule.time_budget_minutes`` (45 unless overridden): its schedule is
:data:`deepatlas.options.UNTIL_BUDGET` steps long, with no other end."""


def recipe_overrides(name: str) -> list[str]:
    """The overrides of recipe ``name`` (an unknown name is refused with the valid ones)."""
    return list(RECIPES[options.look_up_option(name, tuple(RECIPES), "recipe")])


DISTIL_MIN_LABELLED = 3
"""From this many labelled training images on, :func:`suggested_recipe` is ``distil``: the vote of 3
atlases is its teacher (measured at 5 labelled images; at 1, one-atlas teachers, on by default)."""


def suggested_recipe(labelled: int, unlabelled: int) -> str:
    """The recipe measured to train the best seg net for a training set of this make-up.

    With some unlabelled images: ``distil`` from :data:`DISTIL_MIN_LABELLED` labelled images on (at 5
    labelled ixi-2mm images it beat the defaults at 15 minutes, three labelled draws, and the seg net
    alone at 45), ``synthesis`` below (at one labelled image it beat the augmented seg net alone,
    which beat the defaults; docs/results.md). Otherwise ``default``. Not switched on by itself,
    because a recipe trains for a time budget where the defaults train for a number of steps.
    """
    if unlabelled <= 0:
        return "default"
    return "distil" if labelled >= DISTIL_MIN_LABELLED else "synthesis"
