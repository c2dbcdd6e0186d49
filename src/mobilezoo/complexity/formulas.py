"""The textbook's cost formulas (chapter 5.1, MobileNet V1 §3; ShuffleNet V2 §2 for MAC), as closed forms.

k is the kernel size, c_in/c_out the channels, h_out x w_out the output map. Params exclude biases and BN (the
textbook's convention); MAdds are multiply-adds. The profiler counts the same quantities from a forward pass, and the
tests check one against the other on single layers.
"""

from __future__ import annotations

import math


def _check(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a number > 0, got {v!r}")


def standard_conv_cost(k: int, c_in: int, c_out: int, h_out: int, w_out: int) -> tuple[int, int]:
    """Standard k x k conv: params k²·c_in·c_out, MAdds k²·c_in·c_out·h_out·w_out."""
    _check(k=k, c_in=c_in, c_out=c_out, h_out=h_out, w_out=w_out)
    params = k * k * c_in * c_out
    return params, params * h_out * w_out


def depthwise_conv_cost(k: int, c_in: int, h_out: int, w_out: int) -> tuple[int, int]:
    """Depthwise k x k conv (one filter per channel): params k²·c_in, MAdds k²·c_in·h_out·w_out."""
    _check(k=k, c_in=c_in, h_out=h_out, w_out=w_out)
    params = k * k * c_in
    return params, params * h_out * w_out


def pointwise_conv_cost(c_in: int, c_out: int, h_out: int, w_out: int, groups: int = 1) -> tuple[int, int]:
    """1x1 conv with ``groups`` groups (ShuffleNet's pointwise group conv): params c_in·c_out/g, MAdds ·h_out·w_out."""
    _check(c_in=c_in, c_out=c_out, h_out=h_out, w_out=w_out, groups=groups)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    params = c_in * c_out // groups
    return params, params * h_out * w_out


def separable_conv_cost(k: int, c_in: int, c_out: int, h_out: int, w_out: int) -> tuple[int, int]:
    """Depthwise separable conv (depthwise k x k then pointwise 1x1): params k²·c_in + c_in·c_out,
    MAdds k²·c_in·h_out·w_out + c_in·c_out·h_out·w_out."""
    dw = depthwise_conv_cost(k, c_in, h_out, w_out)
    pw = pointwise_conv_cost(c_in, c_out, h_out, w_out)
    return dw[0] + pw[0], dw[1] + pw[1]


def reduction_ratio(k: int, c_out: int) -> float:
    """Cost of a depthwise separable conv over a standard one: 1/c_out + 1/k² (for both params and MAdds)."""
    _check(k=k, c_out=c_out)
    return 1 / c_out + 1 / k**2


def scaled_separable_cost(
    k: int, c_in: int, c_out: int, h_out: int, w_out: int, *, alpha: float = 1.0, rho: float = 1.0
) -> tuple[float, float]:
    """Separable conv cost under width multiplier alpha (c -> alpha·c) and resolution multiplier rho (h, w -> rho·h).

    MAdds = k²·(alpha·c_in)·(rho·h)·(rho·w) + (alpha·c_in)·(alpha·c_out)·(rho·h)·(rho·w);
    params = k²·alpha·c_in + alpha²·c_in·c_out (rho leaves params unchanged).
    Continuous, as in the textbook: real networks round alpha·c to whole (often multiple-of-8) channels.
    """
    _check(k=k, c_in=c_in, c_out=c_out, h_out=h_out, w_out=w_out, alpha=alpha, rho=rho)
    ci, co, hw = alpha * c_in, alpha * c_out, rho * h_out * rho * w_out
    return k * k * ci + ci * co, k * k * ci * hw + ci * co * hw


def width_multiplier_scale(alpha: float) -> float:
    """MAdds and params of the pointwise-dominated net scale by about alpha² under width multiplier alpha."""
    _check(alpha=alpha)
    return alpha**2


def resolution_multiplier_scale(rho: float) -> float:
    """MAdds scale by rho² under resolution multiplier rho; params do not change."""
    _check(rho=rho)
    return rho**2


def pointwise_mac(h: int, w: int, c1: int, c2: int, groups: int = 1) -> int:
    """ShuffleNet V2 MAC of a bias-free 1x1 (group) conv on an h x w map: h·w·(c1 + c2) + c1·c2/g elements."""
    _check(h=h, w=w, c1=c1, c2=c2, groups=groups)
    return h * w * (c1 + c2) + c1 * c2 // groups


def depthwise_mac(k: int, c: int, h_in: int, w_in: int, h_out: int, w_out: int) -> int:
    """MAC of a bias-free k x k depthwise conv: h_in·w_in·c read + h_out·w_out·c written + k²·c weights.

    At stride 1 with 'same' padding this is 2·h·w·c + k²·c.
    """
    _check(k=k, c=c, h_in=h_in, w_in=w_in, h_out=h_out, w_out=w_out)
    return h_in * w_in * c + h_out * w_out * c + k * k * c


def mac_lower_bound(h: int, w: int, madds: float) -> float:
    """G1's bound for a 1x1 conv with B = h·w·c1·c2 MAdds: MAC ≥ 2·√(h·w·B) + B/(h·w), equal iff c1 = c2."""
    _check(h=h, w=w, madds=madds)
    return 2 * math.sqrt(h * w * madds) + madds / (h * w)


__all__ = [
    "depthwise_conv_cost",
    "depthwise_mac",
    "mac_lower_bound",
    "pointwise_conv_cost",
    "pointwise_mac",
    "reduction_ratio",
    "resolution_multiplier_scale",
    "scaled_separable_cost",
    "separable_conv_cost",
    "standard_conv_cost",
    "width_multiplier_scale",
]
