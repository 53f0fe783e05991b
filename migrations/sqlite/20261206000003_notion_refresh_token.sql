-- The OAuth refresh token Notion issues with a user's access token (encrypted like it, with the
-- associated data `<user id>:refresh`). When Notion answers 401 to the access token, the
-- service trades this for a new pair instead of failing every sync until the user reconnects.
-- NULL: none was issued (an integration token PUT by ops, or an older OAuth answer).
alter table users add column notion_refresh_token_ciphertext blob;
