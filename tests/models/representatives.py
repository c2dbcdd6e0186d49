"""The smallest registered model of each model class: widths and groups share a code path, so tests that are too
slow for the whole registry run on these (``tests/models/test_tooling.py::test_representatives`` checks that the list
covers every class)."""

REPRESENTATIVES = [
    "mobilenet_v1_x0_25",
    "mobilenet_v2_x0_35",
    "mobilenet_v3_small",
    "shufflenet_v1_g3_x0_5",
    "shufflenet_v2_x0_5",
    "googlenet",
    "vgg16",
    "squeezenet1_1",
    "mnasnet_a1_x0_35",
    "nasnet_a_mobile",
    "ghostnet_x0_5",
    "efficientnet_lite0",
    "mobilenet_v4_conv_small",
]
