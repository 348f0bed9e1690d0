#!/bin/sh
# Like a well-behaved app: on SIGTERM stop accepting, finish the requests in
# hand, then exit (busybox httpd as PID 1 would ignore SIGTERM).
mkdir -p /www
echo "${VERSION:-v1}" > /www/version
echo "$(hostname) ${VERSION:-v1}" > /www/index.html
# An error page a route can name (berth.errors.page).
echo '<h1>{{status}} from the app</h1><p>{{message}}</p>' > /www/error.html
# FAIL=1 (an image for canary tests): /cgi-bin/who answers 500.
[ "${FAIL:-0}" = 1 ] && touch /www/fail
# A page worth compressing (text/html, a few KB).
for i in $(seq 1 100); do echo "<p>line $i of a page that compresses well</p>"; done > /www/big.html
sleep "${START_DELAY:-0}"
# HEALTHY=0 (an image for failed-rollout tests): /health never appears.
[ "${HEALTHY:-1}" = 1 ] && echo ok > /www/health
httpd -f -p "${PORT:-8080}" -h /www &
listener=$!
trap 'kill $listener; while [ -n "$(pidof httpd)" ]; do sleep 0.05; done; exit 0' TERM
wait
