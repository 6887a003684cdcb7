"""The taskforge command line refuses counts it cannot run, naming the option."""

import pytest

from taskforge.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--workers", "0"), "--workers: 0 is not at least 1"),
        (("--api", "-1"), "--api: -1 is not at least 1"),
        (("--workers", "two"), "--workers: 'two' is not a whole number"),
    ],
)
def test_dev_refuses_process_counts_below_one_naming_the_option(argv, problem, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["dev", *argv])
    assert exit_info.value.code == 2
    assert problem in capsys.readouterr().err
    args = build_parser().parse_args(["dev", "--workers", "3", "--api", "2"])
    assert (args.workers, args.api) == (3, 2)
