"""uvireid_ext.config: presets as YAML files, stage shares, validation and the CLI from the field types."""

import argparse
import dataclasses
import typing

import pytest

from uvireid_ext.config import RECIPES, Config, add_arguments, config_from_args, make_config, validate
from uvireid_ext.objectives import OBJECTIVES, build_objectives


@pytest.mark.parametrize(("recipe", "epochs", "expected"), [
    ("baseline", 100, {"objectives": ["cluster_nce", "joint"], "joint_start": 50, "tsmem_switch": None}),
    ("mmm", 10, {"objectives": ["cluster_nce", "sca", "triplet"], "mmlm": True, "triplet_weight": 1.0}),
    ("ecul", 7, {"objectives": ["cluster_nce", "instance", "cma", "joint"], "clustering": "ecul",
                 "tsmem_switch": 3, "cma_start": 1, "joint_start": 3, "joint_weight": 0.7}),
])
def test_presets_scale_their_stages_with_the_epochs(recipe, epochs, expected) -> None:
    r = make_config(recipe, epochs).recipe
    assert r.recipe == recipe
    for k, v in expected.items():
        assert getattr(r, k) == v, k


def test_user_file_starts_from_a_preset(tmp_path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("_base_: ecul\nrecipe:\n  joint_start: 25%\n  objectives: [cluster_nce, joint]\noptim:\n  epochs: 8\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--config", str(f), "--cma-start", "none"]))
    assert cfg.recipe.recipe == "ecul" and cfg.recipe.clustering == "ecul"  # from the base
    assert cfg.recipe.joint_start == 2 and cfg.recipe.tsmem_switch == 4  # shares of 8 epochs
    assert [o.name for o in build_objectives(cfg)] == ["cluster_nce", "joint"]
    f.write_text("_base_: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        config_from_args(p.parse_args(["--config", str(f)]))


def test_objectives_run_in_the_fixed_order() -> None:
    cfg = make_config("ecul", 4, {"recipe": {"objectives": ["joint", "cma", "cluster_nce", "triplet"]}})
    assert [o.name for o in build_objectives(cfg)] == ["cluster_nce", "joint", "cma", "triplet"]
    assert list(OBJECTIVES) == list(typing.get_args(typing.get_type_hints(type(cfg.recipe))["objectives"].__args__[0]))


@pytest.mark.parametrize(("section", "field", "value", "message"), [
    ("recipe", "objectives", ["cluster_nce", "nope"], r"unknown objectives \['nope'\]"),
    ("recipe", "objectives", ["sca"], "the sca objective works on the cluster memories"),
    ("recipe", "objectives", ["cluster_nce", "cluster_nce"], "lists an objective twice"),
    ("optim", "optimizer", "lamb", r"unknown optimizer 'lamb' \(optim.optimizer\); expected one of adam, sgd"),
    ("optim", "lr", "fast", "optim.lr must be a number, got 'fast'"),
    ("run", "deterministic", "yes", "run.deterministic must be true or false"),
    ("recipe", "tsmem_switch", -2, r"recipe.tsmem_switch must be >= 0 \(or unset\), got -2"),
])
def test_validation_names_the_field(section, field, value, message) -> None:
    cfg = make_config("baseline", 2)
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_every_field_is_a_flag_with_help_and_choices(capsys) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    actions = {a.dest: a for a in p._actions}
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            a = actions[f.name]
            assert a.help and "(default: " in a.help, f.name
    assert tuple(actions["recipe"].choices) == RECIPES
    assert tuple(actions["sca_distance"].choices) == ("l1", "l2sq")
    with pytest.raises(SystemExit):
        p.parse_args(["--mmlm-method", "random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err
    text = p.format_help()  # every help line formats (a bare "%" in one breaks --help)
    assert "50%" in text and "--tsmem-switch" in text
