// hiredis 0.14 (Debian libhiredis-dev): we use only the reply reader
// (redisReader*) and redisFormatCommandArgv, never the variadic redisCommand.
#include <hiredis/hiredis.h>
