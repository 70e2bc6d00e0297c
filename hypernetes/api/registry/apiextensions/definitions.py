"""The OpenAPI definitions of apiextensions.k8s.io/v1 (upstream's, trimmed of long descriptions),
in the vendored form: validation, patching, /openapi and `kubectl explain` read them like any
other kind's. JSONSchemaProps is recursive; the JSON-or-bool/array unions are untyped, as
upstream publishes them, and a CRD's schema is checked by customresources/schema.py instead."""

from __future__ import annotations

from typing import Any

from hypernetes.objects import Obj as JSON

P = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def _s(description: str = "", **kw: Any) -> JSON:
    return {"type": "string", "description": description, **kw}


def _b(description: str = "") -> JSON:
    return {"type": "boolean", "description": description}


def _i(description: str = "", fmt: str = "int64") -> JSON:
    return {"type": "integer", "format": fmt, "description": description}


def _r(name: str, description: str = "") -> JSON:
    return {"$ref": P + name, "description": description}


def _a(items: JSON, description: str = "", **kw: Any) -> JSON:
    return {"type": "array", "items": items, "description": description, **kw}


def _o(description: str, props: JSON, required: tuple[str, ...] = ()) -> JSON:
    out: JSON = {"type": "object", "description": description, "properties": props}
    if required:
        out["required"] = list(required)
    return out


_GVK = [{"group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition", "version": "v1"}]
_SCHEMA = P + "JSONSchemaProps"

DEFINITIONS: dict[str, JSON] = {
    P + "CustomResourceDefinition": {
        **_o(
            "CustomResourceDefinition represents a resource that should be exposed on the API server. "
            "Its name MUST be in the format <.spec.name>.<.spec.group>.",
            {
                "apiVersion": _s(
                    "APIVersion defines the versioned schema of this representation of an object."
                ),
                "kind": _s("Kind is a string value representing the REST resource this object represents."),
                "metadata": {"$ref": META + "ObjectMeta", "description": "Standard object's metadata."},
                "spec": _r(
                    "CustomResourceDefinitionSpec",
                    "spec describes how the user wants the resources to appear",
                ),
                "status": _r(
                    "CustomResourceDefinitionStatus",
                    "status indicates the actual state of the CustomResourceDefinition",
                ),
            },
            ("spec",),
        ),
        "x-kubernetes-group-version-kind": _GVK,
    },
    P + "CustomResourceDefinitionList": {
        **_o(
            "CustomResourceDefinitionList is a list of CustomResourceDefinition objects.",
            {
                "apiVersion": _s(
                    "APIVersion defines the versioned schema of this representation of an object."
                ),
                "items": _a(
                    {"$ref": P + "CustomResourceDefinition"},
                    "items list individual CustomResourceDefinition objects",
                ),
                "kind": _s("Kind is a string value representing the REST resource this object represents."),
                "metadata": {"$ref": META + "ListMeta", "description": "Standard object's metadata."},
            },
            ("items",),
        ),
        "x-kubernetes-group-version-kind": [{**_GVK[0], "kind": "CustomResourceDefinitionList"}],
    },
    P + "CustomResourceDefinitionSpec": _o(
        "CustomResourceDefinitionSpec describes how a user wants their resource to appear",
        {
            "conversion": _r(
                "CustomResourceConversion", "conversion defines conversion settings for the CRD."
            ),
            "group": _s(
                "group is the API group of the defined custom resource. Must match the name of the "
                "CustomResourceDefinition (in the form `<names.plural>.<group>`)."
            ),
            "names": _r(
                "CustomResourceDefinitionNames",
                "names specify the resource and kind names for the custom resource.",
            ),
            "preserveUnknownFields": _b(
                "preserveUnknownFields indicates that object fields which are not "
                "specified in the OpenAPI schema should be preserved when persisting to storage."
            ),
            "scope": _s(
                "scope indicates whether the defined custom resource is cluster- or namespace-scoped. "
                "Allowed values are `Cluster` and `Namespaced`."
            ),
            "versions": _a(
                _r("CustomResourceDefinitionVersion"),
                "versions is the list of all API versions of the defined custom resource.",
                **{"x-kubernetes-list-type": "atomic"},
            ),
        },
        ("group", "names", "scope", "versions"),
    ),
    P + "CustomResourceDefinitionNames": _o(
        "CustomResourceDefinitionNames indicates the names to serve this CustomResourceDefinition",
        {
            "categories": _a(
                _s(),
                "categories is a list of grouped resources this custom resource belongs to (e.g. 'all').",
                **{"x-kubernetes-list-type": "atomic"},
            ),
            "kind": _s("kind is the serialized kind of the resource. It is normally CamelCase and singular."),
            "listKind": _s(
                'listKind is the serialized kind of the list for this resource. Defaults to "`kind`List".'
            ),
            "plural": _s("plural is the plural name of the resource to serve. Must be all lowercase."),
            "shortNames": _a(
                _s(),
                "shortNames are short names for the resource, exposed in API discovery documents.",
                **{"x-kubernetes-list-type": "atomic"},
            ),
            "singular": _s(
                "singular is the singular name of the resource. It must be all lowercase. "
                "Defaults to lowercased `kind`."
            ),
        },
        ("plural", "kind"),
    ),
    P + "CustomResourceDefinitionVersion": _o(
        "CustomResourceDefinitionVersion describes a version for CRD.",
        {
            "additionalPrinterColumns": _a(
                _r("CustomResourceColumnDefinition"),
                "additionalPrinterColumns specifies additional columns returned in Table output.",
                **{"x-kubernetes-list-type": "atomic"},
            ),
            "deprecated": _b("deprecated indicates this version of the custom resource API is deprecated."),
            "deprecationWarning": _s(
                "deprecationWarning overrides the default warning returned to API clients."
            ),
            "name": _s("name is the version name, e.g. “v1”, “v2beta1”, etc."),
            "schema": _r(
                "CustomResourceValidation",
                "schema describes the schema used for validation, pruning, "
                "and defaulting of this version of the custom resource.",
            ),
            "selectableFields": _a(
                {"type": "object"},
                "selectableFields specifies paths to fields that may be used as field selectors.",
            ),
            "served": _b("served is a flag enabling/disabling this version from being served via REST APIs"),
            "storage": _b(
                "storage indicates this version should be used when persisting custom resources to "
                "storage. There must be exactly one version with storage=true."
            ),
            "subresources": _r(
                "CustomResourceSubresources",
                "subresources specify what subresources this version of the defined custom resource have.",
            ),
        },
        ("name", "served", "storage"),
    ),
    P + "CustomResourceValidation": _o(
        "CustomResourceValidation is a list of validation methods for CustomResources.",
        {
            "openAPIV3Schema": _r(
                "JSONSchemaProps",
                "openAPIV3Schema is the OpenAPI v3 schema to use for validation and pruning.",
            )
        },
    ),
    P + "CustomResourceSubresources": _o(
        "CustomResourceSubresources defines the status and scale subresources for CustomResources.",
        {
            "scale": _r(
                "CustomResourceSubresourceScale",
                "scale indicates the custom resource should serve a "
                "`/scale` subresource that returns an `autoscaling/v1` Scale object.",
            ),
            "status": _r(
                "CustomResourceSubresourceStatus",
                "status indicates the custom resource should serve a `/status` subresource.",
            ),
        },
    ),
    P + "CustomResourceSubresourceStatus": {
        "type": "object",
        "description": "CustomResourceSubresourceStatus defines how to serve the status subresource for "
        "CustomResources. Status is represented by the `.status` JSON path inside of a CustomResource.",
    },
    P + "CustomResourceSubresourceScale": _o(
        "CustomResourceSubresourceScale defines how to serve the scale subresource for CustomResources.",
        {
            "labelSelectorPath": _s(
                "labelSelectorPath defines the JSON path inside of a custom resource that "
                "corresponds to Scale `status.selector`."
            ),
            "specReplicasPath": _s(
                "specReplicasPath defines the JSON path inside of a custom resource that "
                "corresponds to Scale `spec.replicas`."
            ),
            "statusReplicasPath": _s(
                "statusReplicasPath defines the JSON path inside of a custom resource that "
                "corresponds to Scale `status.replicas`."
            ),
        },
        ("specReplicasPath", "statusReplicasPath"),
    ),
    P + "CustomResourceColumnDefinition": _o(
        "CustomResourceColumnDefinition specifies a column for server side printing.",
        {
            "description": _s("description is a human readable description of this column."),
            "format": _s("format is an optional OpenAPI type definition for this column."),
            "jsonPath": _s(
                "jsonPath is a simple JSON path (i.e. with array notation) which is evaluated against "
                "each custom resource to produce the value for this column."
            ),
            "name": _s("name is a human readable name for the column."),
            "priority": _i(
                "priority is an integer defining the relative importance of this column compared to others.",
                "int32",
            ),
            "type": _s("type is an OpenAPI type definition for this column."),
        },
        ("name", "type", "jsonPath"),
    ),
    P + "CustomResourceConversion": _o(
        "CustomResourceConversion describes how to convert different versions of a CR.",
        {
            "strategy": _s(
                "strategy specifies how custom resources are converted between versions. "
                'Allowed values are: - `"None"`: The converter only change the apiVersion.'
            ),
            "webhook": {
                "type": "object",
                "description": "webhook describes how to call the conversion webhook.",
            },
        },
        ("strategy",),
    ),
    P + "CustomResourceDefinitionStatus": _o(
        "CustomResourceDefinitionStatus indicates the state of the CustomResourceDefinition",
        {
            "acceptedNames": _r(
                "CustomResourceDefinitionNames",
                "acceptedNames are the names that are actually being used to serve discovery.",
            ),
            "conditions": _a(
                _r("CustomResourceDefinitionCondition"),
                "conditions indicate state for particular aspects of a CustomResourceDefinition",
                **{"x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map"},
            ),
            "storedVersions": _a(
                _s(),
                "storedVersions lists all versions of CustomResources that were ever persisted.",
                **{"x-kubernetes-list-type": "atomic"},
            ),
        },
    ),
    P + "CustomResourceDefinitionCondition": _o(
        "CustomResourceDefinitionCondition contains details for the current condition of this pod.",
        {
            "lastTransitionTime": {
                "$ref": META + "Time",
                "description": "lastTransitionTime last time the "
                "condition transitioned from one status to another.",
            },
            "message": _s("message is a human-readable message indicating details about last transition."),
            "reason": _s(
                "reason is a unique, one-word, CamelCase reason for the condition's last transition."
            ),
            "status": _s("status is the status of the condition. Can be True, False, Unknown."),
            "type": _s(
                "type is the type of the condition. Types include Established, NamesAccepted and Terminating."
            ),
        },
        ("type", "status"),
    ),
    P + "ExternalDocumentation": _o(
        "ExternalDocumentation allows referencing an external resource for extended documentation.",
        {"description": _s(), "url": _s()},
    ),
    P + "JSON": {
        "description": "JSON represents any valid JSON value. These types are supported: bool, int64, "
        "float64, string, []interface{}, map[string]interface{} and nil."
    },
    P + "JSONSchemaPropsOrArray": {
        "description": "JSONSchemaPropsOrArray represents a value that can either be a "
        "JSONSchemaProps or an array of JSONSchemaProps."
    },
    P + "JSONSchemaPropsOrBool": {
        "description": "JSONSchemaPropsOrBool represents JSONSchemaProps or a boolean "
        "value. Defaults to true for the boolean property."
    },
    P + "JSONSchemaPropsOrStringArray": {
        "description": "JSONSchemaPropsOrStringArray represents a JSONSchemaProps or a string array."
    },
    P + "ValidationRule": _o(
        "ValidationRule describes a validation rule written in the CEL expression language.",
        {
            "fieldPath": _s(),
            "message": _s(),
            "messageExpression": _s(),
            "optionalOldSelf": _b(),
            "reason": _s(),
            "rule": _s("Rule represents the expression which will be evaluated by CEL."),
        },
        ("rule",),
    ),
    _SCHEMA: _o(
        "JSONSchemaProps is a JSON-Schema following Specification Draft 4 (http://json-schema.org/).",
        {
            "$schema": _s(),
            "additionalItems": _r("JSONSchemaPropsOrBool"),
            "additionalProperties": _r("JSONSchemaPropsOrBool"),
            "allOf": _a({"$ref": _SCHEMA}, **{"x-kubernetes-list-type": "atomic"}),
            "anyOf": _a({"$ref": _SCHEMA}, **{"x-kubernetes-list-type": "atomic"}),
            "default": _r("JSON", "default is a default value for undefined object fields."),
            "definitions": {"type": "object", "additionalProperties": {"$ref": _SCHEMA}},
            "dependencies": {
                "type": "object",
                "additionalProperties": {"$ref": P + "JSONSchemaPropsOrStringArray"},
            },
            "description": _s(),
            "enum": _a({"$ref": P + "JSON"}, **{"x-kubernetes-list-type": "atomic"}),
            "example": _r("JSON"),
            "exclusiveMaximum": _b(),
            "exclusiveMinimum": _b(),
            "externalDocs": _r("ExternalDocumentation"),
            "format": _s("format is an OpenAPI v3 format string."),
            "id": _s(),
            "items": _r("JSONSchemaPropsOrArray"),
            "maxItems": _i(),
            "maxLength": _i(),
            "maxProperties": _i(),
            "maximum": {"type": "number", "format": "double"},
            "minItems": _i(),
            "minLength": _i(),
            "minProperties": _i(),
            "minimum": {"type": "number", "format": "double"},
            "multipleOf": {"type": "number", "format": "double"},
            "not": {"$ref": _SCHEMA},
            "nullable": _b(),
            "oneOf": _a({"$ref": _SCHEMA}, **{"x-kubernetes-list-type": "atomic"}),
            "pattern": _s(),
            "patternProperties": {"type": "object", "additionalProperties": {"$ref": _SCHEMA}},
            "properties": {"type": "object", "additionalProperties": {"$ref": _SCHEMA}},
            "required": _a(_s(), **{"x-kubernetes-list-type": "atomic"}),
            "title": _s(),
            "type": _s(),
            "uniqueItems": _b(),
            "x-kubernetes-embedded-resource": _b(
                "x-kubernetes-embedded-resource defines that the value is an "
                "embedded Kubernetes runtime.Object, with TypeMeta and ObjectMeta."
            ),
            "x-kubernetes-int-or-string": _b(
                "x-kubernetes-int-or-string specifies that this value is either an integer or a string."
            ),
            "x-kubernetes-list-map-keys": _a(_s(), **{"x-kubernetes-list-type": "atomic"}),
            "x-kubernetes-list-type": _s(),
            "x-kubernetes-map-type": _s(),
            "x-kubernetes-preserve-unknown-fields": _b(
                "x-kubernetes-preserve-unknown-fields stops the API server "
                "decoding step from pruning fields which are not specified "
                "in the validation schema."
            ),
            "x-kubernetes-validations": _a(
                _r("ValidationRule"),
                "",
                **{"x-kubernetes-list-map-keys": ["rule"], "x-kubernetes-list-type": "map"},
            ),
        },
    ),
}
