"""Errors a user can act on: each says what was wrong and what to do."""


class StreamAppError(Exception):
    """An error the CLI reports as one line, without a traceback."""


class ConfigError(StreamAppError):
    """The configuration (environment, runtime file, arguments) is missing or wrong."""


class ServiceTimeout(StreamAppError):
    """A broker or Redis did not answer in time."""


class InputFileError(StreamAppError):
    """A recorded log cannot be read in the format asked for."""


def described(exc: BaseException) -> str:
    """An exception as a log line shows it: its class and message (redis-py 8's repr holds neither message
    nor host, only "server:ResponseError")."""
    said = str(exc)
    if not said:  # asyncio's timeout carries no message: "(TimeoutError: )" said nothing
        return f"{type(exc).__name__}: no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
    return f"{type(exc).__name__}: {said}"
