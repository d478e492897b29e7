"""Configs for random-init transformers backbones (`hf-random:NAME`): benchmark-sized and
tiny test-sized members of every supported family. Plain dicts, so listing them is cheap."""

CONFIG_PRESETS = {
    # ResNet-50 (transformers' ResNetConfig defaults) with an ImageNet-sized head.
    "resnet-50": {"family": "resnet", "num_labels": 1000, "feature_dim": 2048, "config": {}},
    # ViT-S/16 at 224 px.
    "vit-s16": {"family": "vit", "num_labels": 1000, "feature_dim": 384,
                "config": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                           "intermediate_size": 1536, "patch_size": 16, "image_size": 224}},
    # Tiny members for tests and smoke runs (32 px).
    "tiny-resnet": {"family": "resnet", "num_labels": 5, "feature_dim": 32,
                    "config": {"embedding_size": 8, "hidden_sizes": [16, 32], "depths": [1, 1],
                               "layer_type": "basic"}},
    "tiny-vit": {"family": "vit", "num_labels": 5, "feature_dim": 32,
                 "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "intermediate_size": 64, "patch_size": 8, "image_size": 32}},
    "tiny-regnet": {"family": "regnet", "num_labels": 5, "feature_dim": 24,
                    "config": {"embedding_size": 8, "hidden_sizes": [16, 24], "depths": [1, 1],
                               "groups_width": 8}},
    "tiny-beit": {"family": "beit", "num_labels": 5, "feature_dim": 32,
                  "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "intermediate_size": 64, "patch_size": 8, "image_size": 32,
                             "use_mean_pooling": True}},
    "tiny-dinov2": {"family": "dinov2", "num_labels": 5, "feature_dim": 64,
                    "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "mlp_ratio": 2, "patch_size": 8, "image_size": 32}},
    "tiny-clip": {"family": "clip_vision_model", "num_labels": 0, "feature_dim": 32,
                  "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "intermediate_size": 64, "patch_size": 8, "image_size": 32,
                             "projection_dim": 16}},
}
