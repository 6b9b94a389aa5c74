"""GOV.UK Notify-compatible API (/v2): systems built on a Notify client send through the hub
by changing only the base URL and the key.

auth: the per-request HS256 JWT; templates: versioned `((placeholder))` templates;
render: the template language; notifications: sending, statuses, listing;
errors: Notify's error bodies; cli: `hub templates`."""
