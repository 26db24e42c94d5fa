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
    """What the two residual blocks share: ``relu(F(x) + shortcut(x))``, their options and their layers.

    A subclass defines the residual branch ``F`` (:meth:`residual`) and its
    ``expansion`` (output channels ``= expansion * features``). The shortcut is
    the identity, or ``downsample_conv`` (1x1, stride) -> ``downsample_bn``
    when the stride or channel count changes. Convs have no bias (BatchNorm follows).

    Attributes:
      features: the block's inner width.
      strides: stride of the block (1 or 2).
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
    zero_init_residual: bool = False
    dtype: Any = None
    axis_name: Any = None
    expansion: ClassVar[int] = 1
    blur_filter: int = 0

    @property
    def conv_strides(self) -> int:
        """The strided convolution's stride: 1 when a BlurPool does the subsampling (``blur_filter``)."""
        return 1 if self.blur_filter and self.strides != 1 else self.strides

    def down(self, y: Any, name: str) -> jnp.ndarray:
        """Anti-aliased subsampling by ``strides`` (Zhang 2019) when ``blur_filter``, else ``y`` as it is."""
        if self.blur_filter and self.strides != 1:
            return BlurPool(self.blur_filter, self.strides, name=name)(y)
        return y

    def conv(self, features: int, kernel: int, strides: int, name: str) -> Conv:
        """A ``kernel x kernel`` convolution without bias, He-initialized, padding ``kernel // 2``."""
        return Conv(
            features,
            kernel,
            strides=strides,
            padding=kernel // 2,
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            name=name,
        )

    def bn(self, name: str, train: bool, last: bool = False) -> BatchNorm:
        """BatchNorm in training mode when ``train``; ``last``: the branch's final one (zero scale on request)."""
        zero = last and self.zero_init_residual
        return BatchNorm(
            use_running_average=not train,
            axis_name=self.axis_name,
            scale_init=nn.initializers.zeros_init() if zero else nn.initializers.ones_init(),
            dtype=self.dtype,
            name=name,
        )

    def residual(self, x: Any, train: bool) -> jnp.ndarray:
        """The residual branch ``F(x)``: ``(N, H / s, W / s, expansion * features)``."""
        raise NotImplementedError(f"{type(self).__name__} must define residual(); use BasicBlock or BottleneckBlock")

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        out_features = self.expansion * self.features
        y = self.residual(x, train)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_features:
            shortcut = self.bn("downsample_bn", train)(
                self.conv(out_features, 1, self.conv_strides, "downsample_conv")(self.down(x, "downsample_blur"))
            )
        return jax.nn.relu(y + shortcut.astype(y.dtype))


class BasicBlock(ResidualBlock):
    """ResNet-18/34 block: ``F`` = conv1 3x3 (stride) -> bn1 -> ReLU -> conv2 3x3 -> bn2; ``features`` channels out.

    Attributes and returns: as :class:`ResidualBlock`, ``expansion = 1``.
    """

    expansion: ClassVar[int] = 1

    def residual(self, x: Any, train: bool) -> jnp.ndarray:
        y = jax.nn.relu(self.bn("bn1", train)(self.conv(self.features, 3, self.conv_strides, "conv1")(x)))
        return self.bn("bn2", train, last=True)(self.conv(self.features, 3, 1, "conv2")(self.down(y, "blur")))


class BottleneckBlock(ResidualBlock):
    """ResNet-50 block (v1.5, the stride on the 3x3 conv as torchvision); ``4 * features`` channels out.

    ``F`` = conv1 1x1 -> bn1 -> ReLU -> conv2 3x3 (stride) -> bn2 -> ReLU -> conv3 1x1 -> bn3.

    Attributes and returns: as :class:`ResidualBlock`, ``expansion = 4``.
    """

    expansion: ClassVar[int] = 4

    def residual(self, x: Any, train: bool) -> jnp.ndarray:
        y = jax.nn.relu(self.bn("bn1", train)(self.conv(self.features, 1, 1, "conv1")(x)))
        y = jax.nn.relu(self.bn("bn2", train)(self.conv(self.features, 3, self.conv_strides, "conv2")(y)))
        return self.bn("bn3", train, last=True)(
            self.conv(self.expansion * self.features, 1, 1, "conv3")(self.down(y, "blur"))
        )


#: ``ResNet.block`` -> the block class.
BLOCKS: dict[str, type[ResidualBlock]] = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


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
      block: "basic" (:class:`BasicBlock`) or "bottleneck" (:class:`BottleneckBlock`).
      num_classes: outputs (1000).
      width: channels of the stem and of stage 1 (64).
      stem: "imagenet" or "cifar".
      zero_init_residual: zero-init the last BN scale of every block.
      dtype: compute dtype.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics over it, so the step equals
        single-device training on the global batch. ``None``: per device.
      head_name: the name of the classifier layer (``"head"``), for transfer learning.
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
        block = BLOCKS[_validate.check_choice(self.block, "block", tuple(BLOCKS))]
        stem = _validate.check_choice(self.stem, "stem", ("imagenet", "cifar"))
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        stem_conv = Conv(
            self.width,
            k,
            strides=s,
            padding=k // 2,
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            name="conv1",
        )
        x = stem_conv(x)
        x = BatchNorm(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x)
        x = jax.nn.relu(x)
        if stem == "imagenet":
            x = (
                MaxBlurPool(2, self.blur_filter, 2, name="maxpool")
                if self.blur_filter
                else MaxPool(3, strides=2, padding=1, name="maxpool")
            )(x)
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                x = block(
                    self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    axis_name=self.axis_name,
                    blur_filter=self.blur_filter,
                    name=f"layer{i + 1}_block{j + 1}",
                )(x, train=train)
        x = GlobalAvgPool(name="avgpool")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name=self.head_name)(x)
