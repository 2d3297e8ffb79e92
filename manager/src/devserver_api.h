#ifndef RUNFLEET_DEVSERVER_API_H
#define RUNFLEET_DEVSERVER_API_H

/* /api/v1/devservers on the admin listener (docs/DEVSERVERS.md, "API"):
 * reserve, list, show, cancel, extend, add a key, ssh-config. Callers
 * authenticate with a devservers.users token (they see their own
 * reservations; role admin sees all) or an admin.tokens token (all). Bad
 * input is a 4xx JSON {"message"} and changes nothing. */

#include "config.h"
#include "devfleet.h"
#include "http_server.h"

/* Answers req; df NULL: dev servers are not configured (404). A new
 * reservation is answered once the journal has it. */
void dev_api_handle(struct devfleet *df, const struct cfg_admin *admin,
                    const struct http_request *req, struct http_response *resp);

#endif
