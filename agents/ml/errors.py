"""The one error of the ML connector: it names the model, the version and the field that is wrong."""

from __future__ import annotations


class ModelError(ValueError):
    """A model, its card or its artifact was refused (or a training run failed).

    `str()` reads "model NAME version N: FIELD: what is wrong" so an operator sees at once which upload,
    which version and which part of it to fix; the REST API returns it as the 422 detail.
    """

    def __init__(self, model: str | None, version: int | None, field: str, message: str) -> None:
        self.model = model
        self.version = version
        self.field = field
        self.message = message
        where = f"model {model or '?'}" + (f" version {version}" if version is not None else "")
        super().__init__(f"{where}: {field}: {message}")

    def __reduce__(self):  # noqa: ANN204 - crosses the training worker's process boundary intact
        return (type(self), (self.model, self.version, self.field, self.message))

    def to_dict(self) -> dict[str, object]:
        """The REST error body: `message` + `errors: [{path, message}]` as for descriptions (the CLI prints
        both), and the parts on their own."""
        where = f"model {self.model or '?'}" + (f" version {self.version}" if self.version is not None else "")
        return {"message": where, "errors": [{"path": self.field, "message": self.message}],
                "model": self.model, "version": self.version, "field": self.field, "error": str(self)}
