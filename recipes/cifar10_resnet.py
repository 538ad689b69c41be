"""A small ResNet (ResNet-20 style: 3 stages of 3 residual blocks) on TFDS CIFAR-10.

Run:      trainkit train cifar10_resnet          (CIFAR-10 must be prepared: see below)
Smoke:    trainkit train cifar10_resnet -c cifar10_resnet_smoke
Expect:   ResNet-20 reaches about 91% test accuracy with long SGD schedules (He et al.
          2015); this 30-epoch Adam/cosine recipe is a quicker baseline (not measured
          here: the data needs a download).
Data:     TFDS 'cifar10', never downloaded by trainkit. Prepare it once on a machine with
          network (`tfds build cifar10 --data_dir DIR`) and set data.source.data_dir=DIR.
          Train 45k / validation 5k / test 10k; pixels scaled, normalized per channel with
          statistics of the training split; training adds random 32x32 crops of the image
          padded by 4 pixels and horizontal flips (seeded by seed and epoch).
"""


def recipe() -> dict:
    return {
        "name": "cifar10_resnet",
        "seed": 0,
        "data": {
            "source": {
                "type": "tfds",
                "name": "cifar10",
                "splits": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
            },
            "transforms": [{"type": "scale", "factor": 1 / 255}, {"type": "normalize"}],
            "augment": [
                {"type": "random_crop", "size": [32, 32], "padding": 4},
                {"type": "random_flip", "mode": "horizontal"},
            ],
            "cache": "memory",
            "batch_size": 128,
        },
        "model": {"type": "resnet", "stages": [16, 32, 64], "blocks_per_stage": 3},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {
            "type": "AdamW",
            "learning_rate": 2e-3,
            "weight_decay": 5e-4,
            "schedule": {"type": "cosine", "warmup_steps": 200},
        },
        "trainer": {"epochs": 30, "log_every_steps": 100},
    }
