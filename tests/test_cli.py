"""lora_app.__main__: the command line reports problems as sentences, not tracebacks."""


def test_cli_generate_reports_problems_without_a_traceback(capsys):
    from lora_app.__main__ import main

    assert main(["generate", "--adapter", "/no/such/adapter"]) == 2
    err = capsys.readouterr().err
    assert "Cannot generate:" in err and "adapter: '/no/such/adapter'" in err and "Traceback" not in err
