"""A small CNN on TFDS MNIST (28x28 digits, 10 classes): the Keras MNIST convnet example.

Reference: the Keras example "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet)
          reaches about 99% test accuracy with this model, batch 128, 15 epochs.
Run:      trainkit train mnist_cnn          (MNIST must be prepared: see below)
Smoke:    trainkit train mnist_cnn -c mnist_cnn_smoke
Data:     TFDS 'mnist', never downloaded by trainkit. Prepare it once on a machine with
          network (`tfds build mnist --data_dir DIR`), copy DIR here and set
          data.source.data_dir=DIR (or $TFDS_DATA_DIR). Train 54k / validation 6k
          (TFDS slices of 'train') / test 10k; pixels scaled to 0..1 and cached in memory.
"""


def recipe() -> dict:
    return {
        "name": "mnist_cnn",
        "seed": 0,
        "data": {
            "source": {
                "type": "tfds",
                "name": "mnist",
                "splits": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
            },
            "transforms": [{"type": "scale", "factor": 1 / 255}],
            "cache": "memory",
            "batch_size": 128,
        },
        "model": {
            "type": "sequential",
            "layers": [
                {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
                "MaxPooling2D",
                {"type": "Conv2D", "filters": 64, "kernel_size": 3, "activation": "relu"},
                "MaxPooling2D",
                "Flatten",
                {"type": "Dropout", "rate": 0.5},
                {"type": "Dense", "units": 10, "activation": "softmax"},
            ],
        },
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 1e-3},
        "trainer": {"epochs": 15, "log_every_steps": 100},
    }
