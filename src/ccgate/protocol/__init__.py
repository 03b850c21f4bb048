"""Wire protocols: pydantic models of each API and pure translation to and from the engine."""
