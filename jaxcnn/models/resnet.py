"""ResNet (He et al. 2016): BasicBlock (ResNet-18/34) and Bottleneck (ResNet-50) networks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.nn import BatchNorm, BlurPool, Conv, GlobalAvgPool, MaxBlurPool, MaxPool

#: He (Kaiming) normal with fan-out, torchvision's init for ResNet convs.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResidualBlock(nn.Module):
    """A residual block: ``relu(F(x) + shortcut(x))``.

    ``kind="basic"``: ``F`` = conv1 3x3 (stride) -> bn1 -> ReLU -> conv2 3x3 -> bn2;
    output ``features`` channels. ``kind="bottleneck"`` (ResNet v1.5, the
    stride on the 3x3 conv as torchvision): conv1 1x1 -> bn1 -> ReLU -> conv2
    3x3 (stride) -> bn2 -> ReLU -> conv3 1x1 -> bn3; output ``4 * features``.
    The shortcut is the identity, or ``downsample_conv`` (1x1, stride) ->
    ``downsample_bn`` when the stride or channel count changes. Convs have no
    bias (BatchNorm follows).

    Attributes:
      features: the block's inner width.
      strides: stride of the block (1 or 2).
      kind: "basic" or "bottleneck".
      zero_init_residual: initialize the last BN's scale to zero, so the block
        starts as the identity (Goyal et al. 2017).
      dtype: compute dtype.
      axis_name: batch axis name for synchronized BatchNorm (see :class:`ResNet`).
      blur_filter: 0 (off) or the BlurPool filter size m: anti-aliased as Zhang
        (2019): the strided conv runs at stride 1 and ``blur`` (``BlurPool(m, s)``)
        follows its ReLU; the shortcut blurs before its 1x1 conv.

    Returns (``__call__(x, *, train)``): ``(N, H / s, W / s, features * expansion)``.
    """

    features: int
    strides: int = 1
    kind: str = "basic"
    zero_init_residual: bool = False
    dtype: Any = None
    axis_name: Any = None
    blur_filter: int = 0

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        blur = self.blur_filter and self.strides != 1
        down = lambda y, name: BlurPool(self.blur_filter, self.strides, name=name)(y) if blur else y  # noqa: E731
        stride = 1 if blur else self.strides
        conv = lambda f, k, s, name: Conv(  # noqa: E731
            f, k, strides=s, padding=k // 2, use_bias=False, kernel_init=conv_init, dtype=self.dtype, name=name
        )
        zero = nn.initializers.zeros_init()
        bn = lambda name, last=False: BatchNorm(  # noqa: E731
            use_running_average=not train,
            axis_name=self.axis_name,
            scale_init=zero if last and self.zero_init_residual else nn.initializers.ones_init(),
            dtype=self.dtype,
            name=name,
        )
        if self.kind == "basic":
            out_features = self.features
            y = down(jax.nn.relu(bn("bn1")(conv(self.features, 3, stride, "conv1")(x))), "blur")
            y = bn("bn2", last=True)(conv(self.features, 3, 1, "conv2")(y))
        else:
            out_features = 4 * self.features
            y = jax.nn.relu(bn("bn1")(conv(self.features, 1, 1, "conv1")(x)))
            y = down(jax.nn.relu(bn("bn2")(conv(self.features, 3, stride, "conv2")(y))), "blur")
            y = bn("bn3", last=True)(conv(out_features, 1, 1, "conv3")(y))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_features:
            shortcut = bn("downsample_bn")(conv(out_features, 1, stride, "downsample_conv")(down(x, "downsample_blur")))
        return jax.nn.relu(y + shortcut.astype(y.dtype))


class ResNet(nn.Module):
    """ResNet: stem, four (or ``len(stage_sizes)``) stages of residual blocks, global pool, dense head.

    Stem ``"imagenet"``: ``conv1`` 7x7 stride 2 padding 3 -> ``bn1`` -> ReLU ->
    ``maxpool`` 3x3 stride 2 padding 1 (224 -> 56). Stem ``"cifar"``: ``conv1``
    3x3 stride 1 padding 1 -> ``bn1`` -> ReLU, no pool (for 32x32 images).
    Stage ``i`` (``layer{i}``) has ``stage_sizes[i-1]`` blocks named
    ``layer{i}_block{j}``, width ``width * 2**(i-1)``, stride 2 in its first
    block except in stage 1. Then ``avgpool`` (global average) and ``head``.

    With ``num_classes=1000``: ResNet-18 11,689,512 parameters, ResNet-34
    21,797,672, ResNet-50 25,557,032 (torchvision's numbers; running
    statistics are in ``batch_stats``, not counted).

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      block: "basic" or "bottleneck".
      num_classes: outputs (1000).
      width: channels of the stem and of stage 1 (64).
      stem: "imagenet" or "cifar".
      zero_init_residual: zero-init the last BN scale of every block.
      dtype: compute dtype.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics over it, so the step equals
        single-device training on the global batch. ``None``: per device.
      blur_filter: 0 (off) or a BlurPool filter size (3 as Zhang's default):
        anti-aliased downsampling everywhere (the stem's max pool becomes
        ``MaxBlurPool``, every strided block blurs, see :class:`ResidualBlock`);
        the parameters are unchanged.

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: He, Zhang, Ren & Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    num_classes: int = 1000
    width: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    dtype: Any = None
    axis_name: Any = None
    blur_filter: int = 0
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        kind = _validate.check_choice(self.block, "block", ("basic", "bottleneck"))
        stem = _validate.check_choice(self.stem, "stem", ("imagenet", "cifar"))
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        stem_conv = Conv(self.width, k, strides=s, padding=k // 2, use_bias=False, kernel_init=conv_init,
                         dtype=self.dtype, name="conv1")
        x = stem_conv(x)
        x = BatchNorm(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x)
        x = jax.nn.relu(x)
        if stem == "imagenet":
            x = (MaxBlurPool(2, self.blur_filter, 2, name="maxpool") if self.blur_filter
                 else MaxPool(3, strides=2, padding=1, name="maxpool"))(x)
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                x = ResidualBlock(
                    self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    kind=kind,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    axis_name=self.axis_name,
                    blur_filter=self.blur_filter,
                    name=f"layer{i + 1}_block{j + 1}",
                )(x, train=train)
        x = GlobalAvgPool(name="avgpool")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
