//! The Notion client against the fake Notion: pagination, recursion, errors, OAuth.
