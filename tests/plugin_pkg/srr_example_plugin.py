"""An example of a measure from outside srr-bench (registered through its entry point).

Importing this module registers ``mean_abs_weight`` with the public decorators, exactly as
the built-in measure modules do.
"""
from measures.registry import Result, measure, settings_group

settings_group("mean_abs_weight", trainable_only=True)


@measure("mean_abs_weight", eq="example plugin: mean |w| over the parameters")
def mean_abs_weight(ctx, s):
    """Mean absolute value of the model's parameters (trainable ones only by default)."""
    params = [p.detach().double() for p in ctx.model.parameters() if p.requires_grad or not s["trainable_only"]]
    total = sum(p.abs().sum() for p in params)
    count = sum(p.numel() for p in params)
    return Result(float(total / count), {"count": float(count)}, {"tensors": len(params)})
