"""onnxruntime's MLAS float kernels on x86-64 (AVX2 with FMA3), reproduced bit for bit.

onnxruntime's CPU operators that promise exact integer results (the quantized ones in
:mod:`.ort_quantized`) also run float arithmetic whose last bit decides the next quantization step:
one ulp of difference in a sigmoid can move a dynamically quantized value across a rounding boundary,
and the recurrence then carries it on. These helpers compute what MLAS computes, operation for
operation, so those lowerings can agree with onnxruntime exactly rather than to float32 rounding.

- :func:`fma32`: a fused multiply-add, float32 rounded once. The product of two float32 values is
  exact in float64; the sum is rounded to odd there (TwoSum gives its error), which makes the final
  rounding to float32 the correctly rounded one (no double rounding).
- :func:`mlas_logistic`: ``MlasComputeLogisticF32KernelFma3``, the kernel ``MlasComputeLogistic``
  dispatches to on x86-64 with AVX2 and FMA3 (AVX-512 machines included): the input clamped to
  [-18, 18], an odd rational polynomial (degree 9 over degree 10, both evaluated with FMA),
  ``p / q + 0.5``, then ``max(0, .)`` only.
- :func:`mlas_tanh`: ``MlasComputeTanhF32KernelFma3``: clamp to [-9, 9], degree 13 over degree 6,
  ``x * p / q``, no final clamp.

Checked against onnxruntime 1.32's ``Sigmoid`` and ``Tanh``, which call the same kernels: equal in
every bit over [-30, 30] (``tests/test_ort_quantized_ops.py``), where torch's functions differ in
about half of the values.
They are copied into ``model.py`` (``Emitter.helper``) as ``_fma32``, ``_mlas_logistic``, ...; the
calls one helper makes of another are renamed in the copy.
"""

from __future__ import annotations

import torch


def fma32(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """float32 ``x * y + z`` (float32 tensors) rounded once: a fused multiply-add."""
    x, y, z = (v.to(torch.float64) for v in (x, y, z))
    product = x * y  # exact: 24 + 24 significant bits fit in float64's 53
    total = product + z
    # TwoSum: the rounding error of ``total``, exactly
    z_part = total - product
    error = (product - (total - z_part)) + (z - z_part)
    # Round to odd: an inexact sum whose last bit is even moves one ulp toward the exact value,
    # so that the rounding to float32 below cannot land on a tie that the exact value was not on.
    inexact_even = (error != 0) & ((total.view(torch.int64) & 1) == 0)
    toward = torch.where(error > 0, torch.full_like(total, float("inf")), torch.full_like(total, float("-inf")))
    total = torch.where(inexact_even, torch.nextafter(total, toward), total)
    return total.to(torch.float32)


def horner32(square: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """The polynomial in ``square`` with ``coefficients`` (highest power first) by Horner's rule,
    one fused multiply-add per step, as MLAS evaluates its rational approximations."""
    result = fma32(square, torch.tensor(coefficients[0], dtype=torch.float32),
                    torch.tensor(coefficients[1], dtype=torch.float32))
    for coefficient in coefficients[2:]:
        result = fma32(square, result, torch.tensor(coefficient, dtype=torch.float32))
    return result


def mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))`` as onnxruntime computes it on x86-64 (``MlasComputeLogistic``)."""
    alphas = (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03,
              2.48287947061529e-01)
    betas = (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03,
             1.16817656904453e-01, 9.93151921023180e-01)
    x = x.to(torch.float32).clamp(-18.0, 18.0)
    square = x * x
    p, q = horner32(square, alphas), horner32(square, betas)
    return torch.clamp((x * p) / q + 0.5, min=0.0)


def mlas_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` as onnxruntime computes it on x86-64 (``MlasComputeTanh``)."""
    alphas = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
              1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
    betas = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
    x = x.to(torch.float32).clamp(-9.0, 9.0)
    square = x * x
    p, q = horner32(square, alphas), horner32(square, betas)
    return (x * p) / q
