//! The Notion REST client: pages, blocks, data sources, OAuth, errors. Depends on nothing internal.
