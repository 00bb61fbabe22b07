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
    # cores: it beats the seg net alone at 45 minutes (0.803 / 0.712 and 0.801 / 0.664, seeds 0, 1), loses at 15
    # (-1.7, three seeds), where the seg net alone has not converged yet: give it 45 minutes or more.
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
