"""The bundled tiny backbones (trained DiTs on digits and shapes, their classifiers, tiny random
configs for tests and benchmarks) and the image sets they were trained on."""
