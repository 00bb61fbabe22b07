import pytest
import yaml

from deepatlas.config import Config, load_config


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule:\n  cycles: 7\nloss:\n  regularizer: diffusion\n")
    config = load_config(
        path,
        [
            "schedule.cycles=9",
            "loss.regularizer_weight=2",
            "seg_net.channels=[4,8]",
            "seg_net.strides=[2]",
            "schedule.reg_lr=3e-3",
        ],
    )
    assert config.schedule.reg_lr == 0.003
    assert config.schedule.cycles == 9
    assert config.loss.regularizer == "diffusion"
    assert config.loss.regularizer_weight == 2.0 and isinstance(config.loss.regularizer_weight, float)
    assert config.seg_net.channels == [4, 8]


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["data.num_labelled=5", "amp=off"])
    config.save(tmp_path / "config.yaml")
    again = Config.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config


@pytest.mark.parametrize(
    "override, match",
    [
        ("schedule.cylces=3", r"unknown config key.*schedule.cylces.*did you mean schedule.cycles\?"),
        ("loss.similarity=LNCC", "loss.similarity: 'LNCC' is not one of .*did you mean 'lncc'"),
        ("teachers.loss=distill", "did you mean 'distil'"),
        ("schedule.cycles=many", "schedule.cycles: expected int"),
        ("amp=[1]", "amp: expected str"),
        ("amp=sometimes", "amp: 'sometimes' is not one of"),
        ("seg_net.subvoxel_average=always", "seg_net.subvoxel_average: 'always' is not one of"),
        ("refine.for_volumes=[regulariser_weight=0.5]", r"refine.for_volumes: \['regulariser_weight=0.5'\] are not"),
        ("refine.for_volumes=[enabled=false]", "refine.for_volumes: .* are not key=value settings"),
        ("refine.for_maps=[for_volumes=x]", "refine.for_maps: .* are not key=value settings"),
        ("loss.similarity=mi", "loss.similarity"),
        ("teachers.loss=dice", "teachers.loss: .dice. is not one of"),
        ("seg_net.strides=[2]", "seg_net: strides needs"),
        ("novalue", "section.key=value"),
        ("augment.scale=-0.1", "augment.scale must be >= 0"),
        ("schedule.lr_decay=2", "schedule.lr_decay must be in"),
        ("schedule.cycles=10000000", r"schedule.cycles=10000000 means until the time budget.*set schedule.time_budget"),
    ],
)
def test_bad_config_is_explained(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_a_run_saved_before_a_default_changed_keeps_its_value(tmp_path):
    """``reg_net.top_layer`` became ``upsample``; a saved config without the key was trained with
    ``transposed`` and must rebuild that net, while a new config gets the new default."""
    spec = Config().to_dict()
    del spec["reg_net"]["top_layer"], spec["seg_net"]["top_layer"]
    assert Config.from_dict(spec).reg_net.top_layer == "upsample"
    assert Config.from_saved(spec).reg_net.top_layer == "transposed"
    assert Config.from_saved(spec).seg_net.top_layer == "transposed"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert load_config(path, saved=True).reg_net.top_layer == "transposed"
    assert load_config(path, ["reg_net.top_layer=upsample"], saved=True).reg_net.top_layer == "upsample"
    # teachers became "auto": a run saved before the section existed trained without them
    del spec["teachers"]
    assert Config.from_dict(spec).teachers.enabled == "auto"
    assert Config.from_saved(spec).teachers.enabled == "off"


@pytest.mark.parametrize(
    "name, phases",
    [
        ("default", {"seg_pretrain", "reg_pretrain", "reg", "seg"}),
        ("distil", {"reg", "seg"}),
        ("synthesis", {"seg"}),
        ("seg-only", {"seg_pretrain"}),
        ("reg-only", {"reg_pretrain"}),
    ],
)
def test_every_recipe_is_a_valid_config_with_the_phases_it_names(name, phases):
    from deepatlas.recipes import RECIPES, recipe_overrides
    from deepatlas.training.schedule import Schedule

    assert set(RECIPES) == {"default", "distil", "synthesis", "seg-only", "reg-only"}  # a new one gets a row here
    config = load_config(None, recipe_overrides(name))
    schedule = Schedule.from_config(config.schedule)
    assert {schedule.phase_at(step) for step in range(0, min(schedule.total, 3000), 7)} == phases
    # the recipes without an end of their own stop at a budget; the defaults run their schedule
    assert config.schedule.time_budget_minutes == (None if name == "default" else 45)
    # the seg net alone is the strong baseline: augmented whatever N (auto would stop at 2); so are
    # the synthesised images and the labelled one they alternate with
    assert config.augment.active(50) is (name in ("seg-only", "synthesis"))


def test_the_distil_recipe_is_suggested_from_three_labelled_images_and_synthesis_below():
    from deepatlas.recipes import suggested_recipe

    assert [suggested_recipe(n, u) for n, u in ((1, 9), (2, 9), (3, 9), (5, 0), (150, 0))] == [
        "synthesis",
        "synthesis",
        "distil",
        "default",  # every image labelled: nothing to teach
        "default",
    ]


def test_registrations_read_for_volumes_take_their_own_settings_then_the_commands():
    """``refine.for_volumes`` comes first where a registration is read for volumes (``morphometry``), a command's
    ``--refine`` after it; where the two cannot run together, the error says which setting to change."""
    refine = load_config(None, []).refine
    assert (refine.form, refine.regularizer_weight) == ("add", 2.0)  # register's
    volumes = refine.volumes()
    assert (volumes.form, volumes.regularizer_weight) == ("compose", 0.5)
    assert refine.volumes(["regularizer_weight=1"]).regularizer_weight == 1.0
    assert load_config(None, ["refine.for_volumes=[]"]).refine.volumes().form == "add"
    greedy = load_config(None, ["refine.method=greedy"]).refine  # loads: the preset is checked where applied
    with pytest.raises(ValueError, match="refine.form=compose is a form of refine.method=adam"):
        greedy.volumes()
    assert greedy.volumes(["form=add"]).method == "greedy"
    maps = refine.maps()  # the log-Jacobian maps: their own preset, then the command's
    assert (maps.form, maps.regularizer_weight) == ("add", 1.0)
    assert refine.maps(["regularizer_weight=2"]).regularizer_weight == 2.0
    assert load_config(None, ["refine.for_maps=[]"]).refine.maps().regularizer_weight == 2.0
