/*
 * hub_json.h - strict JSON and UTF-8 validation for the client protocol.
 *
 * Internal to core/.  The hub forwards a message's `data` verbatim, so it
 * must know that the text is valid JSON; this validator checks RFC 8259
 * in one pass, without allocating, and records where the top-level
 * object's members are so the protocol layer can read them.
 */
#ifndef HUB_JSON_H
#define HUB_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this is rejected (no unbounded recursion). */
#define HUB_JSON_DEPTH_MAX 64

/* hub_json_parse's result when only the nesting limit was passed. */
#define HUB_JSON_TOO_DEEP (-2)

/* A span of the input: [off, off + len). */
typedef struct hub_json_span {
  size_t off;
  size_t len;
} hub_json_span;

typedef enum hub_json_kind {
  HUB_JSON_NONE = 0,
  HUB_JSON_OBJECT,
  HUB_JSON_ARRAY,
  HUB_JSON_STRING,
  HUB_JSON_NUMBER,
  HUB_JSON_LITERAL /* true, false, null */
} hub_json_kind;

/* One member of the top-level object: its key (the raw text between the
   quotes) and its value (the raw text of the value, quotes included). */
typedef struct hub_json_member {
  hub_json_span key;
  hub_json_span value;
  hub_json_kind kind;
} hub_json_member;

/*
 * hub_json_parse validates |s| (|len| bytes) as exactly one JSON value
 * with optional surrounding whitespace; *kind receives its kind.  When it
 * is an object, the member whose key is keys[i] (compared as raw text) is
 * stored in found[i]; found[i].kind is HUB_JSON_NONE for a key that is
 * absent; for a repeated key the last one wins.  Returns 0 if valid,
 * HUB_JSON_TOO_DEEP when the text nests deeper than HUB_JSON_DEPTH_MAX
 * (found[] then holds the top-level members complete before the deep
 * part, each one valid JSON), or -1 otherwise.  Strings must be valid UTF-8
 * without raw control characters.
 */
int hub_json_parse(const char *s, size_t len, hub_json_kind *kind,
                   const char *const *keys, size_t nkeys,
                   hub_json_member *found);

/* Length of the UTF-8 sequence at |s| (|len| > 0 bytes available), 0 if
   it is not a valid one. */
size_t hub_utf8_seq(const uint8_t *s, size_t len);

/* 1 if |s| is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int hub_utf8_valid(const uint8_t *s, size_t len);

#endif /* HUB_JSON_H */
