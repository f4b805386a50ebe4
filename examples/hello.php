#!/usr/bin/env php
<?php
// hello.php: a program handler in PHP.  Copy it into handlers/ (as `hellophp`, executable;
// Debian: apt-get install php-cli) and mail hellophp@<your domain>.
//
// The message is on stdin (LF line endings), the envelope in the environment: SENDER,
// RECIPIENT, RECIPIENTS, REMOTE_ADDR, HELO, QUEUE_ID, SPF_RESULT, DKIM_RESULT, ... and
// CONF_<KEY> for each key of [handler.hellophp].  All of it comes from a possibly malicious
// client.  Exit 0 done, 75 try again later, 65/67/77 refuse for good.
//
// [handler.hellophp]
// log = /var/log/mailserver/hello-php.log   ; without it the handler reads the message and exits 0

$message = stream_get_contents(STDIN);
if ($message === false) {
    fwrite(STDERR, "cannot read the message\n");
    exit(75);
}

// The Subject: the header block ends at the first empty line; unfold, decode MIME words.
$head = explode("\n\n", $message, 2)[0];
$head = preg_replace("/\n[ \t]+/", " ", $head);
$subject = "";
if (preg_match('/^Subject:[ \t]*(.*)$/mi', $head, $m)) {
    $subject = function_exists('iconv_mime_decode') ? @iconv_mime_decode($m[1], 2, 'UTF-8') : $m[1];
    $subject = preg_replace('/[\x00-\x1f\x7f]/', ' ', (string) $subject);
}

$log = getenv('CONF_LOG');
if ($log === false || $log === '') {
    exit(0);
}
$line = sprintf(
    "%s hello.php: queue=%s from=<%s> to=<%s> subject=%s size=%d\n",
    gmdate('Y-m-d\TH:i:s\Z'),
    getenv('QUEUE_ID'),
    getenv('SENDER'),
    getenv('RECIPIENT'),
    json_encode($subject, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES),
    strlen($message)
);
if (@file_put_contents($log, $line, FILE_APPEND | LOCK_EX) === false) {
    fwrite(STDERR, "cannot write to $log\n");
    exit(75);
}
exit(0);
