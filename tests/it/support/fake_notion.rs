//! A fake Notion API for tests: serves the fixtures and content tests build, injects faults.
