"""The read API's routes, one ``AudienceRouter`` per audience: the customer's own reads
(``own``), staff look-ups (``staff``), campaigns and segments (``campaigns``) and operations
(``operations``); the console's pages are ``serving.console``'s."""
