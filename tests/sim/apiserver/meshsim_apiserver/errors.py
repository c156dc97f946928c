"""The API's error answers: a metav1.Status with the HTTP code and reason
(k8s.io/apimachinery/pkg/api/errors)."""


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
               "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def not_found(resource, name):
    what = resource.plural if not resource.group else f"{resource.plural}.{resource.group}"
    return ApiError(404, "NotFound", f'{what} "{name}" not found',
                    {"name": name, "group": resource.group, "kind": resource.plural})
