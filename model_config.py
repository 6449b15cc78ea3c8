"""The model's settings, declared once (settings.setting): ModelConfig, what it resolves (the stable recipe), what
cannot take effect, and ModelConfig.from_saved, the one reader of saved settings. Adding a model setting is one
field here."""
import argparse
import dataclasses

import geometry_controls  # noqa: F401  (registers euclidean and sphere)
import hyperbolic  # noqa: F401  (registers poincare)
import lorentz  # noqa: F401  (registers lorentz)
import utils
from geometry import geometry_names
from settings import (above, at_least, between, choices_of, declared, defaults, finite_at_least, resolve_unset,
                      setting)

TEXT_SOURCES = ("token", "decoder")
TEXT_COMPARISONS = ("pooled", "attn", "token")
HYP_CHOICES = {"hyp_recipe": ("released", "stable"), "hyp_scale": ("released", "meru"),
               "hyp_midpoint": ("frechet", "gyro"), "hyp_clip": ("hard", "soft"),
               "hyp_pair_weights": ("uniform", "parts")}
# --hyp_recipe stable: chosen on the demo's dev scores and the branch's health, then measured against the released
# computation by script/ablate_hyperbolic.py (docs/hyperbolic.md says why this combination). It fills only the
# settings the user left unset, and of those only the ones its mode uses (RECIPE_MODES).
STABLE_RECIPE = {"hyp_input_norm": True, "hyp_scale": "meru", "hyp_clip_r": 2.0, "hyp_midpoint": "gyro",
                 "hyp_pair_weights": "parts"}
RECIPE_MODES = {"hyp_midpoint": ("pooled", "attn"), "hyp_pair_weights": ("token",)}
# Saved records with settings_format below this one were written while a recipe overrode knobs left at their
# released values (ModelConfig.from_saved reads them as they ran).
SETTINGS_FORMAT = 2
# Settings a fine-tuning run may change from the model it starts from: they shape the loss and the curvature's
# start (fine-tuning restarts it from --init_c), not the weights it loads.
LOSS_SETTINGS = ("alpha", "label_smoothing", "label_smoothing_hyp", "init_c")


@dataclasses.dataclass
class ModelConfig:
    """Every setting that shapes the model, with its one default; fine_tuning.py's model flags are generated from
    these fields (settings.add_arguments). A model folder's config.json stores them; checkpoints store them inside
    their `args`. Unset (None) fields are resolved once, in __post_init__: the recipe's value where it has one for
    this mode, else the declared default."""
    mt5_path: str = setting(None, "overrides config.mt5_path (default: the --finetune folder's mT5, else "
                                  "config.mt5_path)")
    use_hyperbolic: bool = setting(False, "add the hyperbolic (Poincaré-ball) contrastive branch")
    hyp_dim: int = setting(256, "dimension of the hyperbolic space", valid=at_least(1),
                           allowed="at least 1 (the Poincaré ball's dimension)")
    init_c: float = setting(1.0, "initial curvature of the ball", valid=above(0),
                            allowed="a number above 0 (the ball's curvature)")
    hyp_geometry: str = setting("poincare", "the space the branch compares parts and text in: poincare (as released), "
                                            "lorentz (MERU's hyperboloid), or the controls euclidean and sphere",
                                choices=geometry_names)
    hyp_text_emb_src: str = setting("token", "text features: token embeddings or the decoder's last hidden state",
                                    choices=TEXT_SOURCES)
    hyp_text_cmp: str = setting("token", "what the parts are compared with: the pooled text, attention-pooled text, "
                                         "or each part's attention context over the tokens", choices=TEXT_COMPARISONS)
    alpha: float = setting(0.7, "the cross-entropy's starting share of the loss", valid=between(0, 1),
                           allowed="between 0 and 1 (the cross-entropy's share of the loss)")
    label_smoothing: float = setting(0.2, "label smoothing of the cross-entropy", valid=between(0, 1),
                                     allowed="between 0 and 1")
    label_smoothing_hyp: float = setting(0.2, "label smoothing of the contrastive loss", valid=between(0, 1),
                                         allowed="between 0 and 1")
    # Remedies for the saturated branch (hyperbolic.HyperbolicProjection); `released` leaves them all off.
    hyp_recipe: str = setting(
        "released", "released: the paper's computation; stable: the remedies for its saturated part points ("
        + ", ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in STABLE_RECIPE.items())
        + ") for each of these flags left unset (midpoint: pooled/attn; pair weights: token)",
        choices=HYP_CHOICES["hyp_recipe"])
    hyp_clip_r: float = setting(0.0, "clip the tangent vectors to this norm before the exponential map (0: off)",
                                valid=finite_at_least(0), allowed="0 (no clipping) or a positive radius")
    hyp_clip: str = setting("hard", "hard: min(1, r/|u|) u (Guo et al. 2022); soft: r tanh(|u|/r) u/|u|, radii keep "
                                    "differing", choices=HYP_CHOICES["hyp_clip"])
    hyp_scale: str = setting("released", "meru: feature scale that starts near unit radius and can only shrink",
                             choices=HYP_CHOICES["hyp_scale"])
    hyp_input_norm: bool = setting(False, "LayerNorm(x) / sqrt(d) before each hyperbolic projection")
    hyp_midpoint: str = setting("frechet", "pooled/attn: frechet (iterative, as released) or gyro (closed-form "
                                           "weighted gyromidpoint)", choices=HYP_CHOICES["hyp_midpoint"])
    # token mode: "parts" weighs each part's pair in the contrastive loss by P w_p (a change of method, not of
    # numerics: the released token loss never uses the part weights, so nothing moves the parts' radii apart)
    hyp_pair_weights: str = setting("uniform", "token: uniform (as released) or parts (each part's pair weighted by "
                                               "4 w_p, so the part weights enter the loss; a change of method)",
                                    choices=HYP_CHOICES["hyp_pair_weights"])
    settings_format: int = setting(SETTINGS_FORMAT, "how a saved record reads (ModelConfig.from_saved)",
                                   command_line=False)

    def __post_init__(self):
        resolve_unset(self, self._recipe_value)
        for field in declared(type(self)):
            allowed = choices_of(field)
            if allowed and getattr(self, field.name) not in allowed:
                raise ValueError(f"{field.name} must be one of {allowed}; got {getattr(self, field.name)!r}")

    def _recipe_value(self, name):
        """The recipe's value for an unset setting of this mode (None: the declared default). hyp_recipe and
        hyp_text_cmp are declared before the recipe's knobs, so they are resolved when this is asked."""
        if self.hyp_recipe != "stable" or name not in STABLE_RECIPE:
            return None
        return STABLE_RECIPE[name] if self.hyp_text_cmp in RECIPE_MODES.get(name, TEXT_COMPARISONS) else None

    def ineffective(self):
        """The first setting that cannot take effect in this model, as an error message, or None."""
        released = defaults(ModelConfig)
        if not self.use_hyperbolic and self.hyp_recipe != released["hyp_recipe"]:
            return (f"--hyp_recipe {self.hyp_recipe} has no effect without --use_hyperbolic (it sets the hyperbolic "
                    "branch): add --use_hyperbolic, or leave it out")
        if self.hyp_clip == "soft" and self.hyp_clip_r == 0:
            return "--hyp_clip soft has no effect without a clipping radius: add --hyp_clip_r R (R > 0)"
        if self.hyp_pair_weights == "parts" and self.hyp_text_cmp != "token":
            return (f"--hyp_pair_weights parts weighs token mode's part pairs, and --hyp_text_cmp {self.hyp_text_cmp} "
                    "has one pair per sample: use --hyp_text_cmp token, or leave --hyp_pair_weights out")
        if self.hyp_midpoint != released["hyp_midpoint"] and self.hyp_text_cmp == "token":
            return (f"--hyp_midpoint {self.hyp_midpoint} sets the parts' mean of pooled/attn modes, which token mode "
                    "does not take: use --hyp_text_cmp pooled or attn, or leave --hyp_midpoint out")
        return None

    def unused_branch_settings(self):
        """The branch's settings away from their defaults in a model without the branch (a pose-only run of a
        command line written for the branch): said in one line, not refused."""
        released = defaults(ModelConfig)
        if self.use_hyperbolic:
            return []
        return [f"--{name} {getattr(self, name)}" for name in BRANCH_SETTINGS if getattr(self, name) != released[name]]

    def drop_ineffective(self):
        """Set the settings that cannot take effect (ineffective) to their defaults: the same model."""
        released = defaults(ModelConfig)
        inert = list(BRANCH_SETTINGS) if not self.use_hyperbolic else []
        if self.hyp_clip_r == 0:
            inert.append("hyp_clip")
        inert.append("hyp_pair_weights" if self.hyp_text_cmp != "token" else "hyp_midpoint")
        for name in inert:
            setattr(self, name, released[name])
        return self

    @classmethod
    def from_args(cls, args):
        """The settings found in `args`: a namespace of flags (None: unset) or a ModelConfig (utils.config_from_args);
        a dict is a saved record, read by from_saved."""
        if isinstance(args, dict):
            return cls.from_saved(args)
        return utils.config_from_args(cls, args)

    @classmethod
    def from_saved(cls, saved, state_keys=()):
        """The model a saved record describes, as it was trained: the one reader of every generation of saved
        settings (the release's checkpoints, whose args are an argparse Namespace, maybe without use_hyperbolic;
        our older checkpoints; model folders' config.json). `state_keys`: the saved weights' names, which tell
        whether a record without use_hyperbolic has the branch. Records written before settings_format 2 ran the
        stable recipe's value for a knob left at its released value, and the released value for a knob missing from
        the record (it joined the recipe after they were saved). Settings that cannot take effect are set to their
        defaults (drop_ineffective), so the result is a valid command line for the same model."""
        record = dict(vars(saved) if isinstance(saved, argparse.Namespace) else saved)
        values = {f.name: record[f.name] for f in declared(cls) if record.get(f.name) is not None}
        if "use_hyperbolic" not in values:
            values["use_hyperbolic"] = any(key.startswith("hyp_proj") for key in state_keys)
        # a record holding unset (None) settings is a command line of this format, not an older record
        older = "settings_format" not in record and not any(
            record.get(f.name, "") is None for f in declared(cls) if f.name != "mt5_path")
        if older and values.get("hyp_recipe") == "stable":
            released = defaults(cls)
            for name, value in STABLE_RECIPE.items():
                if name not in values:
                    values[name] = released[name]
                elif values[name] == released[name]:
                    values[name] = value
        values["settings_format"] = SETTINGS_FORMAT
        return cls(**values).drop_ineffective()


# The settings of the hyperbolic branch: without it they cannot take effect.
BRANCH_SETTINGS = tuple(f.name for f in declared(ModelConfig)
                        if f.name.startswith("hyp_") or f.name in ("init_c", "alpha", "label_smoothing_hyp"))
