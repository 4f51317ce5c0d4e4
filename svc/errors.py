"""The base of every error the service answers with on purpose.

Each subclass lives beside the code that raises it and names the condition;
``main`` renders all of them as ``{"detail": message}`` with their status code.
"""


class ServiceError(Exception):
    status_code: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
