/// The OpenAPI document served at `/api/openapi.json`; a test checks that its paths are
/// exactly the routes the gateway registers. Edit it together with `RESTAPI.swift`.
enum OpenAPIDocument {
    static let json = #"""
{
 "openapi": "3.1.0",
 "info": {
  "title": "Clinic messaging API",
  "version": "1.0.0",
  "description": "REST API of the clinic messaging gateway. Errors are {\"error\":{\"code\",\"message\"}}. Real-time events use Socket.IO at /socket.io/ (see docs/protocol.md)."
 },
 "paths": {
  "/healthz": {
   "get": {
    "summary": "Liveness: the process answers.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Status"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/readyz": {
   "get": {
    "summary": "Readiness: started, not shutting down and Redis reachable (503 with the reason otherwise). It does not depend on the message store: sends are queued in the stream while the store is down.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Status"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/metrics": {
   "get": {
    "summary": "Prometheus metrics of this gateway (text exposition format): sockets, events in and out, confirmation and delivery latency, rate-limited events, process CPU and memory. Counts only, no message data; keep it off the public ingress.",
    "responses": {
     "200": {
      "description": "Prometheus text format 0.0.4",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string"
        }
       }
      }
     }
    }
   }
  },
  "/api/openapi.json": {
   "get": {
    "summary": "This document.",
    "responses": {
     "200": {
      "description": "OK"
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/api/auth/login": {
   "post": {
    "summary": "Log in; more than 5 failures a minute for an account or address answer 429 with Retry-After.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LoginResponse"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/LoginRequest"
       }
      }
     }
    }
   }
  },
  "/api/auth/logout": {
   "post": {
    "summary": "Revoke the token everywhere.",
    "responses": {
     "204": {
      "description": "OK"
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/auth/logout-everywhere": {
   "post": {
    "summary": "Log out everywhere: every token of yours issued until now is refused on every gateway, this one included, and every socket opened with one ends (audited as logout_everywhere). Log in again to go on.",
    "responses": {
     "204": {
      "description": "OK"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/me": {
   "get": {
    "summary": "The caller.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/me/password": {
   "post": {
    "summary": "Change your own password: the current one is checked as a login is (a wrong one answers 403 and counts as a failed login; more than 5 failures a minute answer 429), the new one has 8 to 72 bytes. Every token of yours issued before ends, on every gateway, with its sockets; the answer is a new token (audited).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LoginResponse"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/ChangePasswordRequest"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/conversations": {
   "get": {
    "summary": "The caller's conversations, latest activity first, with last message and unread count.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ConversationList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "user_email",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "accepted for the original app; must be the caller (403 otherwise)"
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   },
   "post": {
    "summary": "Open a 1:1 (idempotent: one other participant, no title) or create a group (title, up to 256 members).",
    "responses": {
     "201": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Conversation"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/CreateConversationRequest"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/conversations/{id}": {
   "patch": {
    "summary": "Change a group: any member adds people (who see its history, nothing unread) or renames it; a member leaves by removing themselves; the creator and admins remove others. Every member, old and new, gets conversation_updated; audited as update_group.",
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/GroupChange"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ConversationUpdated"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/conversations/{id}/messages": {
   "get": {
    "summary": "A page of history, oldest first: the newest `limit` before seq `before`, or after skipping `skip` from the newest.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/MessageList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 1,
       "maximum": 100
      }
     },
     {
      "name": "before",
      "in": "query",
      "schema": {
       "type": "integer"
      },
      "description": "a seq (history) or an audit entry id"
     },
     {
      "name": "skip",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 0
      }
     },
     {
      "name": "user_email",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "accepted for the original app; must be the caller (403 otherwise)"
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/conversations/{id}/read": {
   "post": {
    "summary": "Mark read up to `up_to_seq` (default: everything).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ReadReceipt"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "required": false,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/MarkConversationReadBody"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/messages": {
   "post": {
    "summary": "Send (201 only after the store committed it; 503 if it did not answer in time: retry with the same client_id or Idempotency-Key).",
    "responses": {
     "201": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Message"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "Idempotency-Key",
      "in": "header",
      "required": false,
      "description": "A retry key, taken as the send's client_id (1 to 128 characters); a client_id in the body must then be the same.",
      "schema": {
       "type": "string"
      }
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/SendMessageRequest"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/messages/{id}": {
   "delete": {
    "summary": "Retract a message you sent: invisible to everyone at once, deleted unless the conversation is on legal hold; every participant gets messages_purged (audited as retract_message). 403 for another's message, 404 for one you cannot see.",
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "message_id": {
           "type": "string"
          },
          "conversation_id": {
           "type": "string"
          }
         }
        }
       }
      }
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/messages/{id}/read": {
   "post": {
    "summary": "Mark this message (and everything before it) read.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ReadReceipt"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/messages/unread-count": {
   "get": {
    "summary": "Unread messages, in total and per conversation.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/UnreadCount"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "user_email",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "accepted for the original app; must be the caller (403 otherwise)"
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/messages/search": {
   "get": {
    "summary": "Messages containing every word of q, from the caller's conversations only.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/MessageList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "q",
      "in": "query",
      "schema": {
       "type": "string"
      }
     },
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 1,
       "maximum": 100
      }
     },
     {
      "name": "user_email",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "accepted for the original app; must be the caller (403 otherwise)"
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/users/search": {
   "get": {
    "summary": "Enabled users whose name or email contains q, optionally of one role.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/UserList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "q",
      "in": "query",
      "schema": {
       "type": "string"
      }
     },
     {
      "name": "user_role",
      "in": "query",
      "schema": {
       "type": "string",
       "enum": [
        "admin",
        "doctor"
       ]
      }
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users": {
   "get": {
    "summary": "Every user (admins only).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/UserList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   },
   "post": {
    "summary": "Create a user (admins only).",
    "responses": {
     "201": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/CreateUserRequest"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users/{email}/disable": {
   "post": {
    "summary": "Disable a user: they cannot log in and their tokens stop working (admins only).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "email",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "format": "email"
      }
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users/{email}/enable": {
   "post": {
    "summary": "Enable a user again (admins only).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "email",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "format": "email"
      }
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users/{email}/role": {
   "put": {
    "summary": "Change a user's role (admins only).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "email",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "format": "email"
      }
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/RoleBody"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users/{email}/password": {
   "post": {
    "summary": "Set another user's password (admins only; audited): the one given, or, with no body, a generated one returned once as password. Every token and socket of the user ends. Your own: POST /api/me/password.",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ResetPasswordResponse"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "email",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "format": "email"
      }
     }
    ],
    "requestBody": {
     "required": false,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/ResetPasswordRequest"
       }
      }
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/users/{email}/logout": {
   "post": {
    "summary": "End every session of a user (admins only; audited as admin.end_sessions): their tokens issued until now are refused and their sockets end, on every gateway; they can log in again (a lost or shared device).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/User"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "email",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "format": "email"
      }
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/audit": {
   "get": {
    "summary": "The audit log, newest first (admins only).",
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/AuditList"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "413": {
      "$ref": "#/components/responses/PayloadTooLarge"
     },
     "422": {
      "$ref": "#/components/responses/InvalidContent"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "parameters": [
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 1,
       "maximum": 100
      }
     },
     {
      "name": "before",
      "in": "query",
      "schema": {
       "type": "integer"
      },
      "description": "a seq (history) or an audit entry id"
     }
    ],
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/conversations": {
   "get": {
    "summary": "Conversations an admin may put on legal hold: those a participant takes part in, those on hold (held=true), or both; participants and counts, never content; the latest activity first (admins only; audited as admin.list_conversations).",
    "parameters": [
     {
      "name": "participant",
      "in": "query",
      "schema": {
       "type": "string",
       "format": "email"
      }
     },
     {
      "name": "held",
      "in": "query",
      "schema": {
       "type": "boolean"
      }
     },
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 1,
       "maximum": 500,
       "default": 100
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "array",
         "items": {
          "$ref": "#/components/schemas/AdminConversation"
         }
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/conversations/{id}/hold": {
   "post": {
    "summary": "Put a conversation on legal hold: its messages are kept past their expiry, still invisible to users (admins only; audited).",
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LegalHold"
        }
       }
      }
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  },
  "/api/admin/conversations/{id}/release": {
   "post": {
    "summary": "Release a legal hold: messages already due are scheduled for deletion again (admins only; audited).",
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LegalHold"
        }
       }
      }
     },
     "401": {
      "$ref": "#/components/responses/Unauthorized"
     },
     "403": {
      "$ref": "#/components/responses/Forbidden"
     },
     "404": {
      "$ref": "#/components/responses/NotFound"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    },
    "security": [
     {
      "bearer": []
     }
    ]
   }
  }
 },
 "components": {
  "securitySchemes": {
   "bearer": {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT"
   }
  },
  "schemas": {
   "Error": {
    "type": "object",
    "properties": {
     "error": {
      "type": "object",
      "properties": {
       "code": {
        "type": "string"
       },
       "message": {
        "type": "string"
       }
      },
      "required": [
       "code",
       "message"
      ]
     }
    },
    "required": [
     "error"
    ]
   },
   "Status": {
    "type": "object",
    "properties": {
     "status": {
      "type": "string"
     }
    }
   },
   "User": {
    "type": "object",
    "properties": {
     "email": {
      "type": "string"
     },
     "name": {
      "type": "string"
     },
     "role": {
      "type": "string",
      "enum": [
       "admin",
       "doctor"
      ]
     },
     "disabled": {
      "type": "boolean"
     },
     "online": {
      "type": "boolean"
     },
     "last_seen": {
      "type": "string",
      "format": "date-time"
     },
     "must_change_password": {
      "type": "boolean",
      "description": "present (true) while the password is one an admin or operator set: every route but GET /api/me, POST /api/me/password and logging out answers 403 password_change_required, and sockets are refused, until the user chooses their own"
     }
    },
    "required": [
     "email",
     "name",
     "role"
    ]
   },
   "UserList": {
    "type": "array",
    "items": {
     "$ref": "#/components/schemas/User"
    }
   },
   "LoginRequest": {
    "type": "object",
    "properties": {
     "email": {
      "type": "string"
     },
     "password": {
      "type": "string"
     }
    },
    "required": [
     "email",
     "password"
    ]
   },
   "LoginResponse": {
    "type": "object",
    "properties": {
     "token": {
      "type": "string"
     },
     "token_type": {
      "type": "string"
     },
     "expires_at": {
      "type": "string",
      "format": "date-time"
     },
     "user": {
      "$ref": "#/components/schemas/User"
     }
    },
    "required": [
     "token",
     "expires_at",
     "user"
    ]
   },
   "Message": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "conversation_id": {
      "type": "string"
     },
     "seq": {
      "type": "integer"
     },
     "sender_email": {
      "type": "string"
     },
     "receiver_email": {
      "type": "string"
     },
     "content": {
      "type": "string"
     },
     "timestamp": {
      "type": "string",
      "format": "date-time"
     },
     "read": {
      "type": "boolean"
     },
     "read_at": {
      "type": "string",
      "format": "date-time"
     },
     "expires_at": {
      "type": "string",
      "format": "date-time"
     },
     "client_id": {
      "type": "string"
     }
    },
    "required": [
     "id",
     "conversation_id",
     "seq",
     "sender_email",
     "content",
     "timestamp",
     "read",
     "expires_at"
    ]
   },
   "MessageList": {
    "type": "array",
    "items": {
     "$ref": "#/components/schemas/Message"
    }
   },
   "GroupChange": {
    "type": "object",
    "properties": {
     "title": {
      "type": "string",
      "minLength": 1,
      "maxLength": 100
     },
     "add_members": {
      "type": "array",
      "items": {
       "type": "string",
       "format": "email"
      }
     },
     "remove_members": {
      "type": "array",
      "items": {
       "type": "string",
       "format": "email"
      }
     }
    }
   },
   "ConversationUpdated": {
    "type": "object",
    "description": "Also the data of the conversation_updated event.",
    "properties": {
     "conversation_id": {
      "type": "string"
     },
     "title": {
      "type": "string"
     },
     "participants": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "added": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "removed": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "by": {
      "type": "string"
     }
    }
   },
   "Conversation": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "created_by": {
      "type": "string",
      "description": "a group's creator (absent for 1:1)"
     },
     "kind": {
      "type": "string",
      "enum": [
       "direct",
       "group"
      ]
     },
     "title": {
      "type": "string"
     },
     "participants": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "created_at": {
      "type": "string",
      "format": "date-time"
     },
     "last_message_at": {
      "type": "string",
      "format": "date-time"
     },
     "last_message": {
      "$ref": "#/components/schemas/Message"
     },
     "unread_count": {
      "type": "integer"
     },
     "members": {
      "type": "array",
      "description": "the participants with their names and roles",
      "items": {
       "$ref": "#/components/schemas/User"
      }
     },
     "presence": {
      "type": "object",
      "description": "each participant's presence (conversation list only)",
      "additionalProperties": {
       "type": "object",
       "properties": {
        "online": {
         "type": "boolean"
        },
        "last_seen": {
         "type": "string",
         "format": "date-time"
        }
       }
      }
     },
     "read_positions": {
      "type": "object",
      "description": "each participant's read marker: the seq read up to (0 for nothing yet)",
      "additionalProperties": {
       "type": "integer"
      }
     },
     "read_version": {
      "type": "integer",
      "description": "the version of the newest move of these markers (0 if none moved); the highest of a list is a sync's receipts_after (docs/protocol.md)"
     }
    },
    "required": [
     "id",
     "kind",
     "participants",
     "created_at",
     "unread_count"
    ]
   },
   "ConversationList": {
    "type": "array",
    "items": {
     "$ref": "#/components/schemas/Conversation"
    }
   },
   "CreateConversationRequest": {
    "type": "object",
    "properties": {
     "participants": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "title": {
      "type": "string"
     }
    },
    "required": [
     "participants"
    ]
   },
   "SendMessageRequest": {
    "type": "object",
    "properties": {
     "receiver_email": {
      "type": "string"
     },
     "conversation_id": {
      "type": "string"
     },
     "content": {
      "type": "string"
     },
     "client_id": {
      "type": "string"
     }
    },
    "required": [
     "content"
    ]
   },
   "MarkConversationReadBody": {
    "type": "object",
    "properties": {
     "up_to_seq": {
      "type": "integer"
     }
    }
   },
   "ReadReceipt": {
    "type": "object",
    "properties": {
     "message_id": {
      "type": "string"
     },
     "conversation_id": {
      "type": "string"
     },
     "reader_email": {
      "type": "string"
     },
     "read_at": {
      "type": "string",
      "format": "date-time"
     },
     "up_to_seq": {
      "type": "integer"
     }
    },
    "required": [
     "conversation_id",
     "reader_email",
     "read_at",
     "up_to_seq"
    ]
   },
   "UnreadCount": {
    "type": "object",
    "properties": {
     "total": {
      "type": "integer"
     },
     "conversations": {
      "type": "object",
      "additionalProperties": {
       "type": "integer"
      }
     }
    },
    "required": [
     "total",
     "conversations"
    ]
   },
   "CreateUserRequest": {
    "type": "object",
    "properties": {
     "email": {
      "type": "string"
     },
     "name": {
      "type": "string"
     },
     "role": {
      "type": "string",
      "enum": [
       "admin",
       "doctor"
      ]
     },
     "password": {
      "type": "string",
      "description": "8 characters to 72 bytes; hashed by the gateway (only the bcrypt hash reaches Redis)"
     }
    },
    "required": [
     "email",
     "name",
     "role",
     "password"
    ]
   },
   "RoleBody": {
    "type": "object",
    "properties": {
     "role": {
      "type": "string",
      "enum": [
       "admin",
       "doctor"
      ]
     }
    },
    "required": [
     "role"
    ]
   },
   "ChangePasswordRequest": {
    "type": "object",
    "properties": {
     "current_password": {
      "type": "string"
     },
     "new_password": {
      "type": "string",
      "minLength": 8,
      "description": "8 characters to 72 bytes"
     }
    },
    "required": [
     "current_password",
     "new_password"
    ]
   },
   "ResetPasswordRequest": {
    "type": "object",
    "properties": {
     "password": {
      "type": "string",
      "minLength": 8,
      "description": "8 characters to 72 bytes; left out, one is generated"
     }
    }
   },
   "ResetPasswordResponse": {
    "type": "object",
    "properties": {
     "user": {
      "$ref": "#/components/schemas/User"
     },
     "password": {
      "type": "string",
      "description": "the generated password, present only when none was given"
     }
    },
    "required": [
     "user"
    ]
   },
   "AuditList": {
    "type": "array",
    "items": {
     "type": "object",
     "properties": {
      "id": {
       "type": "integer"
      },
      "at": {
       "type": "string",
       "format": "date-time"
      },
      "actor": {
       "type": "string"
      },
      "action": {
       "type": "string"
      },
      "target": {
       "type": "string"
      },
      "outcome": {
       "type": "string"
      },
      "gateway": {
       "type": "string"
      },
      "request_id": {
       "type": "string"
      },
      "detail": {
       "type": "string"
      }
     }
    }
   },
   "AdminConversation": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "kind": {
      "type": "string",
      "enum": [
       "direct",
       "group"
      ]
     },
     "title": {
      "type": "string"
     },
     "participants": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "created_at": {
      "type": "string",
      "format": "date-time"
     },
     "last_message_at": {
      "type": "string",
      "format": "date-time"
     },
     "messages": {
      "type": "integer",
      "description": "messages stored"
     },
     "kept_past_expiry": {
      "type": "integer",
      "description": "stored messages past their expiry, kept only by the hold"
     },
     "legal_hold": {
      "type": "boolean"
     }
    }
   },
   "LegalHold": {
    "type": "object",
    "properties": {
     "conversation_id": {
      "type": "string"
     },
     "legal_hold": {
      "type": "string",
      "enum": [
       "on",
       "off"
      ]
     }
    }
   }
  },
  "responses": {
   "BadRequest": {
    "description": "invalid JSON or parameters",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "PayloadTooLarge": {
    "description": "body over 64 KiB",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "InvalidContent": {
    "description": "content empty, over 10,000 characters or not text",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "RateLimited": {
    "description": "too many attempts",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "Unavailable": {
    "description": "the store did not answer in time",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "Unauthorized": {
    "description": "no, bad, expired or revoked token",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "Forbidden": {
    "description": "not allowed",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "NotFound": {
    "description": "unknown id, or not a participant",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   }
  }
 }
}
"""#
}
