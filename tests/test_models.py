"""jaxcnn.models: exact parameter counts, any input size, BatchNorm modes, dtypes and errors.

Shapes and counts are traced with jax.eval_shape (no compilation); real forward passes use
tiny inputs and an RBG key, whose init compiles several times faster on CPU than threefry.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import create_model, list_models, model_options

# (name, classes, options, input (H, W, C), parameters): ../shared/GUIDE.md §5, except vgg16
# with the GAP head, derived: torchvision vgg16_bn features 14,723,136 (138,365,992 minus the
# 123,642,856 of its classic head) + 512*64+64 + 2*64 + 64*2+2 = 14,756,226.
EXPECTED_PARAMS = [
    ("lenet5", 10, {}, (32, 32, 3), 62_006),
    ("lenet5", 10, {}, (28, 28, 1), 44_426),
    ("vgg16_catdog", 2, {}, (224, 224, 3), 16_526_466),
    ("vgg16", 2, {}, (224, 224, 3), 14_756_226),
    ("vgg11", 1000, {"head": "classic"}, (224, 224, 3), 132_868_840),
    ("vgg13", 1000, {"head": "classic"}, (224, 224, 3), 133_053_736),
    ("vgg16", 1000, {"head": "classic"}, (224, 224, 3), 138_365_992),
    ("vgg19", 1000, {"head": "classic"}, (224, 224, 3), 143_678_248),
    ("googlenet", 1000, {}, (224, 224, 3), 6_624_904),
    ("googlenet", 1000, {"aux_logits": True}, (224, 224, 3), 13_004_888),
    ("resnet18", 1000, {}, (224, 224, 3), 11_689_512),
    ("resnet34", 1000, {}, (224, 224, 3), 21_797_672),
    ("resnet50", 1000, {}, (224, 224, 3), 25_557_032),
    ("resnet101", 1000, {}, (224, 224, 3), 44_549_160),
    ("resnet152", 1000, {}, (224, 224, 3), 60_192_808),
    ("resnet101", 8, {"stem": "cifar"}, (32, 32, 3), 42_508_872),
    ("resnet20", 10, {}, (32, 32, 3), 269_722),
    ("resnet32", 10, {}, (32, 32, 3), 464_154),
    ("resnet44", 10, {}, (32, 32, 3), 658_586),
    ("resnet56", 10, {}, (32, 32, 3), 853_018),
    ("resnet110", 10, {}, (32, 32, 3), 1_727_962),
]

KEY = jax.random.key(0)


def abstract_init(model, shape, train=False):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(partial(model.init, train=train), KEY, x)


def abstract_apply(model, variables, shape, train, mutable=("batch_stats",)):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    apply = partial(model.apply, train=train, mutable=list(mutable),
                    rngs={"dropout": KEY} if train else None)
    return jax.eval_shape(apply, variables, x)


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def test_every_model_has_a_reference_count():
    assert {row[0] for row in EXPECTED_PARAMS} == set(list_models())


@pytest.mark.parametrize("name,classes,options,input_shape,expected", EXPECTED_PARAMS,
                         ids=[f"{r[0]}-{r[1]}-{'-'.join(map(str, r[2].values()))}-{r[3][0]}"
                              for r in EXPECTED_PARAMS])
def test_parameter_count_matches_reference(name, classes, options, input_shape, expected):
    variables = abstract_init(create_model(name, classes, **options), (1, *input_shape))
    assert count(variables["params"]) == expected


@pytest.mark.parametrize("name,options", [
    ("vgg11", {}), ("vgg16", {"head": "classic"}), ("googlenet", {"aux_logits": True}),
    ("resnet18", {}), ("resnet50", {}), ("resnet18", {"stem": "cifar"}),
])
def test_imagenet_models_accept_any_size(name, options):
    model = create_model(name, 7, **options)
    variables = abstract_init(model, (1, 64, 64, 3))
    for height, width, train in [(32, 32, False), (64, 64, False), (96, 96, False),
                                 (224, 224, False), (48, 80, True)]:
        logits, _ = abstract_apply(model, variables, (2, height, width, 3), train)
        assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)


@pytest.mark.parametrize("name,shape", [
    ("resnet20", (2, 28, 28, 1)), ("resnet20", (2, 8, 12, 3)), ("resnet32", (2, 32, 32, 3)),
    ("resnet44", (2, 32, 32, 3)), ("resnet56", (2, 32, 32, 3)), ("resnet110", (2, 32, 32, 3)),
])
def test_cifar_resnets_shapes(name, shape):
    model = create_model(name, 10)
    logits, _ = abstract_apply(model, abstract_init(model, shape), shape, train=True)
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_lenet_forward_adapts_first_fc(input_shape):
    model = create_model("lenet5", 10)
    x = jax.random.normal(KEY, (2, *input_shape))
    variables = jax.jit(partial(model.init, train=False))(jax.random.key(0, impl="rbg"), x)
    side = ((input_shape[0] - 4) // 2 - 4) // 2    # conv 5x5, pool 2, conv 5x5, pool 2
    assert variables["params"]["fc1"]["kernel"].shape == (16 * side * side, 120)
    logits = jax.jit(partial(model.apply, train=True))(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert jnp.all(jnp.isfinite(logits))


@pytest.fixture(scope="module")
def resnet20():
    model = create_model("resnet20", 10)
    x = jax.random.normal(KEY, (2, 32, 32, 3))
    variables = jax.jit(partial(model.init, train=False))(jax.random.key(0, impl="rbg"), x)
    return model, variables, x


def test_train_mode_updates_batch_stats_and_eval_does_not(resnet20):
    model, variables, x = resnet20
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    logits, updated = apply(variables, x, train=True, mutable=("batch_stats",))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    before, after = variables["batch_stats"], updated["batch_stats"]
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
    assert all(jax.tree.leaves(changed))       # every running mean and var moved

    logits, unchanged = apply(variables, x, train=False, mutable=("batch_stats",))
    jax.tree.map(np.testing.assert_array_equal, unchanged["batch_stats"], before)
    np.testing.assert_array_equal(logits, apply(variables, x, train=False))


def test_bfloat16_compute_returns_float32_logits(resnet20):
    model, variables, x = resnet20
    bf16 = create_model("resnet20", 10, dtype=jnp.bfloat16)
    logits = jax.jit(partial(bf16.apply, train=False))(variables, x)
    reference = jax.jit(partial(model.apply, train=False))(variables, x)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "googlenet", "resnet50", "resnet20"])
def test_bfloat16_everywhere(name):
    model = create_model(name, 5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    variables = abstract_init(model, (1, 32, 32, 3))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.bfloat16)}
    logits, _ = abstract_apply(model, variables, (2, 32, 32, 3), train=True)
    assert logits.dtype == jnp.float32


def test_googlenet_aux_logits_only_in_training_with_option():
    shape = (2, 64, 64, 3)
    model = create_model("googlenet", 4, aux_logits=True)
    variables = abstract_init(model, shape, train=True)
    assert set(variables) == {"params", "batch_stats"}     # nothing sown at init
    mutable = ("batch_stats", "aux_logits")
    logits, state = abstract_apply(model, variables, shape, train=True, mutable=mutable)
    assert set(state["aux_logits"]) == {"aux1", "aux2"}
    for aux in jax.tree.leaves(state["aux_logits"]):
        assert (aux.shape, aux.dtype) == ((2, 4), jnp.float32)
    assert logits.shape == (2, 4)

    _, state = abstract_apply(model, variables, shape, train=False, mutable=mutable)
    assert not state.get("aux_logits")
    plain = create_model("googlenet", 4)
    _, state = abstract_apply(plain, abstract_init(plain, shape), shape, True, mutable)
    assert not state.get("aux_logits")


@pytest.mark.parametrize("name,minimum", [("lenet5", 16), ("vgg16", 32), ("googlenet", 15)])
def test_too_small_input_names_the_minimum(name, minimum):
    model = create_model(name, 3)
    abstract_init(model, (1, minimum, minimum, 3))
    for size in [(minimum - 1, minimum - 1), (minimum, minimum - 1)]:
        with pytest.raises(ValueError, match=rf"{name} needs .* at least {minimum}x{minimum}"
                                             rf".* got {size[0]}x{size[1]}"):
            abstract_init(model, (1, *size, 3))


def test_resnets_have_no_minimum():
    for name in ("resnet18", "resnet20"):
        model = create_model(name, 3)
        logits, _ = abstract_apply(model, abstract_init(model, (2, 1, 1, 3)), (2, 1, 1, 3), True)
        assert logits.shape == (2, 3)


def test_unbatched_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"NHWC .* got shape \(32, 32, 3\)"):
        abstract_init(create_model("resnet20", 10), (32, 32, 3))


def test_unknown_model_lists_valid_names_and_closest():
    with pytest.raises(ValueError, match="Did you mean 'resnet50'") as info:
        create_model("resnet-50", 10)
    assert all(name in str(info.value) for name in list_models())
    assert create_model("ResNet50", 10).name == "resnet50"


@pytest.mark.parametrize("name,options,message", [
    ("vgg16", {"heads": "gap"}, "valid options: .*'head'"),
    ("resnet18", {"stage_sizes": (1, 1, 1, 1)}, "unknown option"),
    ("vgg16", {"head": "dense"}, "head must be one of"),
    ("resnet50", {"stem": "tiny"}, "stem must be one of"),
])
def test_bad_options_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, 10, **options)


@pytest.mark.parametrize("classes", [0, -1, 2.0, True])
def test_bad_num_classes(classes):
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", classes)


def test_model_options():
    assert model_options("googlenet") == [
        "aux_logits", "dropout_rate", "aux_dropout_rate", "dtype", "param_dtype"]
    assert "stage_sizes" not in model_options("resnet50")
    assert {"stem", "zero_init_residual", "dtype"} <= set(model_options("resnet50"))
