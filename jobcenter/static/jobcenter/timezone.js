/* Tell the server the browser's time zone (jobcenter.middleware reads the cookie), so
   admin pages show times in the staff member's zone. No reload: the next page uses it. */
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone) {
    return;
  }
  var match = document.cookie.match(/(?:^|;\s*)jobcenter_tz=([^;]*)/);
  if (match && decodeURIComponent(match[1]) === zone) {
    return;
  }
  document.cookie =
    "jobcenter_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
})();
