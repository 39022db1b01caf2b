"""Activation functions whose *AD* derivatives are chosen on purpose (paper sections 4.3, 4.4).

The second derivative of the activation is what the diagonal of the NME (the second term of the
Gauss-Newton / NME split of the Hessian) is made of. This module provides activations whose
first, second and third derivatives *as returned by JAX autodiff* are stated exactly:

=================  ==================  ===========================  =============================
name               AD f'               AD f''                       AD f'''
=================  ==================  ===========================  =============================
relu               Θ(x), Θ(0) = 0      0                            0
gelu               Φ(x) + xφ(x)        φ(x)(2 − x²)                 φ(x)(x³ − 4x)
beta_gelu          Φ(βx) + βxφ(βx)     βφ(βx)(2 − β²x²)   (eq. 14)  β²φ(βx)(β³x³ − 4βx)
augmented_relu     Θ(x), Θ(0) = 0      βφ(βx)             (eq. 15)  −β³xφ(βx)
diminished_gelu    Φ(x) + xφ(x)        0                  (eq. 16)  0
tanh               1 − t²              −2t(1 − t²)                  (1 − t²)(6t² − 2)
softplus           σ(x)                σ(1 − σ)                     σ(1 − σ)(1 − 2σ)
=================  ==================  ===========================  =============================

Here Φ and φ are the standard normal CDF and density, t = tanh(x) and σ the logistic sigmoid.
For augmented ReLU and diminished GELU the AD derivatives are *not* the derivatives of the
forward function: that is the point of eq. 15 and 16.

Every function takes an array ``x`` of any shape, is elementwise, and preserves a floating dtype
(float32 in gives float32 out at every derivative order); integer input is promoted to the
default float dtype. All of them compose with ``grad``, ``jvp`` (Hessian-vector products are
``jvp`` of ``grad``), ``jit`` and ``vmap`` to any order; they are built only with
``jax.custom_jvp`` (``custom_vjp`` would block forward mode).

``beta`` is a hyperparameter, not a differentiable input: it must be a concrete finite number
> 0 and is validated on every call (a traced ``beta`` raises ``TypeError``). Close over it or use
:func:`get`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from nmelab import validation

__all__ = [
    "NAMES",
    "augmented_relu",
    "beta_gelu",
    "diminished_gelu",
    "gelu",
    "get",
    "names",
    "relu",
    "softplus",
    "tanh",
    "with_derivatives",
]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

ActivationFn = Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_float(x: Any) -> jax.Array:
    """``jnp.asarray(x)``, promoting non-floating input to the default float dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _like(y: Any, x: jax.Array) -> jax.Array:
    """Return ``y`` cast to the dtype and shape of ``x`` (rules may return Python floats)."""
    return jnp.broadcast_to(jnp.asarray(y).astype(x.dtype), x.shape)


def _normal_pdf(z: jax.Array) -> jax.Array:
    """Standard normal density φ(z) = e^{−z²/2} / √(2π)."""
    return _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)


def _heaviside(x: jax.Array) -> jax.Array:
    """Heaviside step Θ(x) with the paper's (and ``jax.nn.relu``'s) convention Θ(0) = 0."""
    return (x > 0).astype(x.dtype)


def _check_beta(beta: Any) -> float:
    """Validate the sharpness ``beta`` (a concrete finite number > 0); return it as a float."""
    return validation.check_number(beta, "beta", minimum=0.0, strict=True)


# --------------------------------------------------------------------------------------------
# the factory
# --------------------------------------------------------------------------------------------


def with_derivatives(
    f: Callable[[jax.Array], Any],
    df: Callable[[jax.Array], Any],
    d2f: Callable[[jax.Array], Any],
    *,
    name: str | None = None,
) -> ActivationFn:
    """Build an elementwise activation whose AD derivatives are prescribed (paper section 4.4).

    The returned function ``g`` satisfies, for JAX autodiff ``D_AD``::

        g(x)                  = f(x)
        D_AD[g](x)            = df(x)
        D_AD[D_AD[g]](x)      = d2f(x)
        D_AD[D_AD[D_AD[g]]](x) = D_AD[d2f](x)   (ordinary JAX autodiff of d2f)

    and so on: every order above the second is ordinary autodiff of ``d2f``. Nothing requires
    ``df`` to be the true derivative of ``f`` or ``d2f`` that of ``df``; this is how the
    augmented ReLU (eq. 15) and diminished GELU (eq. 16) are made.

    Construction: ``df`` is itself wrapped as a ``jax.custom_jvp`` function ``g1`` whose rule is
    ``(g1(x), d2f(x)·ẋ)``, and the rule of ``g`` is ``(g(x), g1(x)·ẋ)``. Each rule computes its
    primal output by calling the custom function itself, so mixed-order paths (jvp of grad,
    grad of jvp, grad of grad of grad) all route through the prescribed derivatives.

    Trap: writing the derivative inline in the rule of ``g`` (e.g. ``(x > 0) * ẋ``) makes the
    *second* AD derivative the autodiff of that expression, silently 0 for a step function.
    Only ``custom_jvp`` is used: ``custom_vjp`` would block forward mode and so HVPs.

    Args:
        f: elementwise forward function.
        df: elementwise function returned as the first AD derivative.
        d2f: elementwise function returned as the second AD derivative; it must itself be
            differentiable by JAX if third-order derivatives are needed (e.g. for a
            Hessian-trace penalty).
        name: ``__name__`` of the result (default ``f.__name__``).

    The outputs of ``f``, ``df``, ``d2f`` may be Python floats or arrays broadcastable to ``x``;
    they are cast to the dtype and shape of ``x``.

    Returns:
        A unary function ``x -> y`` on arrays of any shape, preserving a floating dtype.

    Raises:
        TypeError: one of ``f``, ``df``, ``d2f`` is not callable.
    """
    for arg_name, fn in (("f", f), ("df", df), ("d2f", d2f)):
        if not callable(fn):
            raise TypeError(f"{arg_name} must be callable, got {fn!r}")

    @jax.custom_jvp
    def first(x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return _like(df(x), x)

    @first.defjvp
    def _first_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        x, x_dot = jnp.asarray(x), jnp.asarray(x_dot)
        return first(x), _like(d2f(x), x) * x_dot

    @jax.custom_jvp
    def value(x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return _like(f(x), x)

    @value.defjvp
    def _value_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        x, x_dot = jnp.asarray(x), jnp.asarray(x_dot)
        return value(x), first(x) * x_dot

    def activation(x: jax.Array) -> jax.Array:
        return value(_as_float(x))

    activation.__name__ = activation.__qualname__ = name or getattr(f, "__name__", "activation")
    activation.__doc__ = (
        f"Activation {activation.__name__!r} from with_derivatives: value f, AD derivative df, "
        "second AD derivative d2f, higher orders by autodiff of d2f."
    )
    return activation


# --------------------------------------------------------------------------------------------
# the analytic pieces
# --------------------------------------------------------------------------------------------


def _gelu_value(x: jax.Array) -> jax.Array:
    return x * ndtr(x)


def _gelu_first(x: jax.Array) -> jax.Array:
    return ndtr(x) + x * _normal_pdf(x)


def _gelu_second(x: jax.Array) -> jax.Array:
    return _normal_pdf(x) * (2.0 - x * x)


def _relu_value(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, 0)


_relu = with_derivatives(_relu_value, _heaviside, jnp.zeros_like, name="relu")
_gelu = with_derivatives(_gelu_value, _gelu_first, _gelu_second, name="gelu")
_diminished_gelu = with_derivatives(
    _gelu_value, _gelu_first, jnp.zeros_like, name="diminished_gelu"
)


@functools.cache
def _beta_gelu_fn(beta: float) -> ActivationFn:
    def value(x):
        return x * ndtr(beta * x)

    def first(x):
        z = beta * x
        return ndtr(z) + z * _normal_pdf(z)

    def second(x):
        z = beta * x
        return beta * _normal_pdf(z) * (2.0 - z * z)

    return with_derivatives(value, first, second, name=f"beta_gelu(beta={beta!r})")


@functools.cache
def _augmented_relu_fn(beta: float) -> ActivationFn:
    def second(x):
        return beta * _normal_pdf(beta * x)

    return with_derivatives(_relu_value, _heaviside, second, name=f"augmented_relu(beta={beta!r})")


# --------------------------------------------------------------------------------------------
# public activations
# --------------------------------------------------------------------------------------------


def relu(x: jax.Array) -> jax.Array:
    """ReLU, max(x, 0), with explicit AD derivatives.

    AD f'(x) = Θ(x) with Θ(0) = 0 (as ``jax.nn.relu``; note ``jnp.maximum(x, 0)`` alone gives
    1/2 at 0). AD f'' = 0 and AD f''' = 0 everywhere: the true second derivative is a Dirac
    delta at 0 that AD cannot represent, so the NME diagonal of a ReLU net is 0 (section 4.3).

    Args:
        x: array of any shape.

    Returns:
        ``max(x, 0)``, same shape and floating dtype as ``x``.
    """
    return _relu(x)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x·Φ(x), with Φ the standard normal CDF (eq. 13 with β = 1).

    Trap: ``jax.nn.gelu`` defaults to the tanh *approximation* (``approximate=True``), which is
    a different function; this is the erf form (``jax.nn.gelu(x, approximate=False)``).

    AD derivatives (closed form, φ the standard normal density):
    f'(x) = Φ(x) + xφ(x); f''(x) = φ(x)(2 − x²); f'''(x) = φ(x)(x³ − 4x).

    Args:
        x: array of any shape.

    Returns:
        x·Φ(x), same shape and floating dtype as ``x``.
    """
    return _gelu(x)


def beta_gelu(x: jax.Array, beta: float) -> jax.Array:
    """β-GELU, x·Φ(βx) (eq. 13): GELU at β = 1, ReLU as β → ∞.

    AD derivatives (closed form, z = βx, φ the standard normal density):
    f'(x) = Φ(z) + zφ(z);
    f''(x) = β/√(2π)·e^{−β²x²/2}·(2 − β²x²) = βφ(z)(2 − z²)  (eq. 14, corrected);
    f'''(x) = β²φ(z)(z³ − 4z).

    Typo fix: eq. 14 as printed, 1/(√(2π)β⁻²)·e^{−x²/2β⁻²}·[2 − (x/β⁻¹)²], has the prefactor
    β²/√(2π); the correct one is β/√(2π). Only with β does ∫f'' dx = f'(∞) − f'(−∞) = 1 hold
    for every β, as the paper's own text says. In particular f''(0) = 2β/√(2π) ≈ 0.80β (the
    paper's "second derivative β at the origin" is this, loosely), so unlike AD ReLU the
    large-β limit keeps a spike of height O(β) and width O(1/β) at 0 (a smoothed Dirac delta)
    where AD ReLU has 0.

    Args:
        x: array of any shape.
        beta: sharpness, a concrete finite number > 0 (not differentiable, not traced).

    Returns:
        x·Φ(βx), same shape and floating dtype as ``x``.

    Raises:
        ValueError: ``beta`` not finite or ≤ 0.
        TypeError: ``beta`` traced or not a real scalar.
    """
    return _beta_gelu_fn(_check_beta(beta))(x)


def augmented_relu(x: jax.Array, beta: float) -> jax.Array:
    """Augmented ReLU (eq. 15): ReLU whose second AD derivative is a Gaussian of width 1/β.

    Forward: max(x, 0). AD f'(x) = Θ(x) with Θ(0) = 0 (the paper's choice). AD f''(x) =
    β/√(2π)·e^{−β²x²/2} = βφ(βx), a smoothed Dirac delta with ∫f'' = 1, so the NME of a ReLU
    net is "turned on". AD f'''(x) = −β³x·φ(βx), the autodiff of f''. None of these is the true
    derivative of the forward function beyond the first.

    Trap: the step Θ must be its own ``custom_jvp`` function whose rule returns f''. Writing
    Θ inline in the rule of f makes AD f'' silently 0, i.e. plain ReLU.

    Args:
        x: array of any shape.
        beta: width parameter of the Gaussian, a concrete finite number > 0.

    Returns:
        max(x, 0), same shape and floating dtype as ``x``.

    Raises:
        ValueError: ``beta`` not finite or ≤ 0.
        TypeError: ``beta`` traced or not a real scalar.
    """
    return _augmented_relu_fn(_check_beta(beta))(x)


def diminished_gelu(x: jax.Array) -> jax.Array:
    """Diminished GELU (eq. 16): exact GELU with the second AD derivative turned off.

    Forward: x·Φ(x). AD f'(x) = Φ(x) + xφ(x), the true GELU'. AD f''(x) = 0 and AD f'''(x) = 0
    by definition, although the true GELU'' is φ(x)(2 − x²): the NME diagonal of the network
    is removed while forward pass and gradients are exactly GELU's.

    Args:
        x: array of any shape.

    Returns:
        x·Φ(x), same shape and floating dtype as ``x``.
    """
    return _diminished_gelu(x)


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent, ordinary JAX autodiff.

    With t = tanh(x): f' = 1 − t², f'' = −2t(1 − t²), f''' = (1 − t²)(6t² − 2).

    Args:
        x: array of any shape.

    Returns:
        tanh(x), same shape and floating dtype as ``x``.
    """
    return jnp.tanh(_as_float(x))


def softplus(x: jax.Array) -> jax.Array:
    """Softplus, log(1 + eˣ) (computed stably as ``jax.nn.softplus``), ordinary JAX autodiff.

    With σ the logistic sigmoid: f' = σ(x), f'' = σ(1 − σ), f''' = σ(1 − σ)(1 − 2σ).

    Args:
        x: array of any shape.

    Returns:
        log(1 + eˣ), same shape and floating dtype as ``x``.
    """
    return jax.nn.softplus(_as_float(x))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

# name -> (builder taking the validated parameters as keywords, parameter names)
_REGISTRY: dict[str, tuple[Callable[..., ActivationFn], tuple[str, ...]]] = {
    "relu": (lambda: relu, ()),
    "gelu": (lambda: gelu, ()),
    "beta_gelu": (lambda beta: _beta_gelu_fn(_check_beta(beta)), ("beta",)),
    "augmented_relu": (lambda beta: _augmented_relu_fn(_check_beta(beta)), ("beta",)),
    "diminished_gelu": (lambda: diminished_gelu, ()),
    "tanh": (lambda: tanh, ()),
    "softplus": (lambda: softplus, ()),
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Valid names for :func:`get`."""


def names() -> tuple[str, ...]:
    """Return the valid activation names for :func:`get` (same as :data:`NAMES`)."""
    return NAMES


def get(name: str, **params: Any) -> ActivationFn:
    """Return the activation ``name`` as a unary callable ``x -> y`` (for configs).

    ``beta_gelu`` and ``augmented_relu`` require ``beta`` (finite, > 0); the others take no
    parameters. The callable for a given ``(name, beta)`` is cached, so repeated calls return
    the same object (no retracing under ``jit``).

    Args:
        name: one of :data:`NAMES`: relu, gelu, beta_gelu, augmented_relu, diminished_gelu,
            tanh, softplus.
        **params: parameters of the activation (only ``beta``).

    Returns:
        A function of one array argument.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid choices), unexpected or
            missing parameter, or ``beta`` not finite or ≤ 0.
        TypeError: ``name`` not a string, or ``beta`` not a real scalar.

    Example:
        >>> act = get("beta_gelu", beta=5.0)
        >>> float(act(0.0))
        0.0
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {', '.join(NAMES)}; got {name!r}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown activation name {name!r}; valid choices: {', '.join(NAMES)}")
    builder, expected = _REGISTRY[name]
    unexpected = sorted(set(params) - set(expected))
    if unexpected:
        accepts = f"accepts only {', '.join(expected)}" if expected else "takes no parameters"
        raise ValueError(
            f"activation {name!r} {accepts}; got unexpected parameter(s) "
            + ", ".join(f"{k}={params[k]!r}" for k in unexpected)
        )
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(
            f"activation {name!r} requires parameter {missing[0]!r} (a finite number > 0); got none"
        )
    return builder(**params)
