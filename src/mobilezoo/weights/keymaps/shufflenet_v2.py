"""ShuffleNet V2: the official checkpoints of megvii-model/ShuffleNet-Series (``ShuffleNetV2/``, 0.5x-2.0x).

Their layout: ``first_conv.{0,1}``; ``features.<n>`` numbering the 16 units across stages; a unit's ``branch_main``
(1x1 ``.0``, BN ``.1``, ReLU, depthwise ``.3``, BN ``.4``, 1x1 ``.5``, BN ``.6``, ReLU: torchvision's ``branch2``
indices) and, in a stride-2 unit, ``branch_proj`` (depthwise ``.0``, BN ``.1``, 1x1 ``.2``, BN ``.3``: ``branch1``);
``conv_last.{0,1}``; ``classifier.0`` (no bias).

The model built with ``shuffle="megvii"`` ends every unit with the inverse shuffle (evens, then odds); the official
units begin with it instead (the even channels pass, the odd ones enter the branch) and the last unit of a stage has
none. What each stage's last unit leaves permuted is undone in the convs that read it: the next stage's stride-2
unit (``branch1``'s depthwise conv and BN, then the input channels of ``branch1``'s and ``branch2``'s 1x1) and
``conv5``.
"""

from __future__ import annotations

from mobilezoo.models.shufflenet_v2 import SHUFFLENET_V2, ShuffleNetV2
from mobilezoo.weights.keymap import KeyMap, permute, shuffle_index
from mobilezoo.weights.keymaps import FamilyWeights, MegviiModels, register_family


def megvii_keymap(model: ShuffleNetV2) -> KeyMap:
    """The official ShuffleNet V2 layout onto ``model`` (built with ``shuffle="megvii"``, without ``star``)."""
    km = KeyMap("megvii ShuffleNetV2")
    km.add("first_conv.0", "conv1.0")
    km.add("first_conv.1", "conv1.1")
    n = 0
    for s, stage in enumerate(SHUFFLENET_V2):
        for u, unit in enumerate(getattr(model, stage.name)):
            src, dst = f"features.{n}", f"{stage.name}.{u}"
            # the input of a later stage's first unit arrives as evens-then-odds of the official order
            chans = unit.branch2[0].in_channels
            moved = s > 0 and u == 0
            depthwise = permute(0, shuffle_index(chans, chans // 2)) if moved else None
            columns = permute(1, shuffle_index(chans, chans // 2)) if moved else None
            note = "input channels evens-then-odds" if moved else ""
            km.add(f"{src}.branch_main.0", f"{dst}.branch2.0", columns, note)
            for k in (1, 3, 4, 5, 6):
                km.add(f"{src}.branch_main.{k}", f"{dst}.branch2.{k}")
            if unit.stride == 2:
                km.add(f"{src}.branch_proj.0", f"{dst}.branch1.0", depthwise, note)
                km.add(f"{src}.branch_proj.1", f"{dst}.branch1.1", depthwise, note)
                km.add(f"{src}.branch_proj.2", f"{dst}.branch1.2", columns, note)
                km.add(f"{src}.branch_proj.3", f"{dst}.branch1.3")
            n += 1
    chans = model.conv5[0].in_channels
    km.add("conv_last.0", "conv5.0", permute(1, shuffle_index(chans, chans // 2)), "input channels evens-then-odds")
    km.add("conv_last.1", "conv5.1")
    km.add("classifier.0", "fc")
    return km


register_family(
    FamilyWeights(
        family="ShuffleNetV2",
        megvii_keymap=megvii_keymap,
        megvii=MegviiModels(
            models=tuple(f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")),
            port={"shuffle": "megvii"},
            arch={"torchvision_compat": False, "star": False},
            marker="branch_main",
        ),
    )
)
