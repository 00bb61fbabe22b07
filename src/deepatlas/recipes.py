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
    # on one labelled and one taught image, as cheap as the seg net alone's; 2 of every 12 steps
    # train the reg net. No pre-training. Measured on ixi-2mm validation, 5 labelled images, 2 CPU
    # cores: it beats the seg net alone at 45 minutes (0.802 against 0.687, mean of seeds 0-2, every seed by 9+
    # points), loses to it at 15 (-1.7, three seeds; it still beats the defaults there, +1.7), where the seg
    # net alone has not converged yet: give it 45 minutes or more.
    "distil": (
        "schedule.seg_pretrain_steps=0",
        "schedule.reg_pretrain_steps=0",
        "schedule.cycles=100000",
        "schedule.reg_steps_per_cycle=2",
        "schedule.seg_steps_per_cycle=10",
        "schedule.time_budget_minutes=45",
        "teachers.enabled=on",
        "teachers.loss=distil",
        "teachers.atlases=3",
        "teachers.max_share=0.25",
        "teachers.refresh_steps=10000000",
        "teachers.refine_levels=[4,2,1]",
        "teachers.refine_iterations=[60,20,5]",
    ),
    # the baselines DeepAtlas is compared with, for the same budget (a user's own comparison): the
    # seg net alone, supervised on the labelled images; the reg net alone, unsupervised
    "seg-only": (
        "schedule.seg_pretrain_steps=10000000",
        "schedule.reg_pretrain_steps=0",
        "schedule.cycles=0",
        "schedule.time_budget_minutes=45",
    ),
    "reg-only": (
        "schedule.seg_pretrain_steps=0",
        "schedule.reg_pretrain_steps=10000000",
        "schedule.cycles=0",
        "schedule.time_budget_minutes=45",
    ),
}
"""Recipe name -> its overrides. Every recipe but ``default`` trains until
``schedule.time_budget_minutes`` (45 unless overridden): its schedule has no other end."""


def recipe_overrides(name: str) -> list[str]:
    """The overrides of recipe ``name`` (an unknown name is refused with the valid ones)."""
    return list(RECIPES[options.look_up_option(name, tuple(RECIPES), "recipe")])


DISTIL_MIN_LABELLED = 3
"""From this many labelled training images on, :func:`suggested_recipe` is ``distil``: the vote of 3
atlases is its teacher (measured at 5 labelled images; at 1, one-atlas teachers, on by default)."""


def suggested_recipe(labelled: int, unlabelled: int) -> str:
    """The recipe measured to train the best seg net for a training set of this make-up.

    ``distil`` with at least :data:`DISTIL_MIN_LABELLED` labelled images and some unlabelled ones
    to teach: at 5 labelled ixi-2mm images it beat the defaults at 15 minutes (three labelled draws)
    and the seg net alone at 45 (docs/results.md). Otherwise ``default``. Not switched on by itself,
    because the recipe trains for a time budget where the defaults train for a number of steps.
    """
    return "distil" if labelled >= DISTIL_MIN_LABELLED and unlabelled > 0 else "default"
